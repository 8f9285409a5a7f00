"""`eomt demo` and `eomt demo --ablation` with the `--quick` recipe: what they print, the ablation's table, and bad
settings as one-line errors (the demo's outputs themselves: `tests/training/demo/test_demo_run.py`)."""

import json
import re

from training.commands import main

PQ_KEYS = {"pq", "pq_things", "pq_stuff", "sq", "rq"}


def test_demo_prints_pq_of_both_inference_modes(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"PQ \d+\.\d \(mask-free inference, \d+\.\d\d ms / image\)", printed)
    assert re.search(r"PQ \d+\.\d \(masked inference, \d+\.\d\d ms / image\)", printed)


def test_ablation_table(tmp_path, capsys):
    assert main(["demo", "--ablation", "--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert list(summary["variants"]) == ["masked", "annealed", "mask_free"]
    for result in summary["variants"].values():
        assert PQ_KEYS <= set(result["pq"]) and result["forward_ms_per_image"] > 0
    assert "pq_mask_free_inference" in summary["variants"]["masked"]

    table = (tmp_path / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| (a) masked attention, kept at inference",
        "| (b) mask annealing, mask-free inference",
        "| (c) no masked attention",
    ]
    assert all(len(row.split(" | ")) == 7 for row in rows)  # variant, PQ, things, stuff, SQ, RQ, latency
    assert rows[0] in capsys.readouterr().out


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    assert main(["demo", "--quick", "--image-size", "40", "--out", str(tmp_path)]) == 2
    assert "image_size must be a multiple of the patch size 16, got 40" in capsys.readouterr().err
