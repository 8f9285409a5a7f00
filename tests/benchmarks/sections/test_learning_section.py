"""The learning benchmark (`eomt benchmark --sections learning`) at its CI scale: every set and run is trained,
evaluated and reported (the PQ values of a 2-step run are not checked)."""

import json

import pytest

from benchmarks.learning import CALIBRATED, PRESETS, RUNS, THRESHOLDS, learning_options, main as learning_main
from tests.training.helpers import single_thread  # noqa: F401 (fixture)
from training.commands import main as eomt

pytestmark = pytest.mark.usefixtures("single_thread")


def test_learning_section_reports_every_set_and_run(tmp_path, capsys):
    out = tmp_path / "learning"
    argv = ["benchmark", "--sections", "learning", "--learning-preset", "ci", "--learning-out", str(out), "--out",
            str(tmp_path / "benchmark.json"), "--threads", "1"]  # fmt: skip
    assert eomt(argv) == 0
    printed = capsys.readouterr().out

    rows = [line for line in (out / "learning.md").read_text().splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = rows[0], rows[1:]
    assert [f"PQ@{t:g}" in header for t in THRESHOLDS] == [True] * len(THRESHOLDS)
    reported = (*RUNS, CALIBRATED)
    assert [(row.split(" | ")[0].lstrip("| "), row.split(" | ")[1]) for row in rows] == [
        (f"{name} (32 px)", run) for name in ("A", "B", "C") for run in reported
    ]
    assert (out / "learning.md").read_text().strip() in printed

    report = json.loads((out / "learning.json").read_text())
    assert report["options"]["steps"] == PRESETS["ci"].steps and len(report["results"]) == 3
    for result in report["results"]:
        assert set(result["runs"]) == set(reported)
        for metrics in result["runs"].values():
            assert metrics["train_seconds"] > 0
            for threshold in THRESHOLDS:
                assert all(0 <= metrics[f"{name}@{threshold:g}"] <= 100 or metrics[f"{name}@{threshold:g}"] is None
                           for name in ("pq", "pq_things", "pq_stuff"))  # fmt: skip
        assert result["runs"]["eomt train"]["recipe"]["name"] == "from scratch (random initialisation)"
        # eomt train's post-processing is what it saved after evaluating on val; every run is scored on test
        runs = result["runs"]
        assert runs["hand loop"]["postprocessing"] == {"threshold": 0.8, "overlap_mask_area_threshold": 0.8}
        for run in ("eomt train", CALIBRATED):
            settings = runs[run]["postprocessing"]
            assert settings["threshold"] in THRESHOLDS and settings["overlap_mask_area_threshold"] in (0.4, 0.6, 0.8)
        assert runs[CALIBRATED]["train_seconds"] == runs["hand loop"]["train_seconds"]  # the same model
        for metrics in runs.values():
            assert metrics["pq"] == metrics[f"pq@{metrics['postprocessing']['threshold']:g}"]
            assert metrics["calibration"]["threshold"] == metrics["postprocessing"]["threshold"]
    shown = [row.split(" | ")[2] for row in rows]
    assert shown == [f"{settings['threshold']:g} / {settings['overlap_mask_area_threshold']:g}"
                     for result in report["results"] for settings in
                     (result["runs"][run]["postprocessing"] for run in reported)]  # fmt: skip
    assert len(list(out.glob("data/set_A_32px_8_3_3_seed0/test2017/*.jpg"))) == 3
    assert (out / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    benchmark = json.loads((tmp_path / "benchmark.json").read_text())
    assert [row["section"] for row in benchmark["results"]] == ["learning"] * 3
    assert all(row["ratio"]["median"] > 0 for row in benchmark["results"])


def test_options_override_the_preset():
    import argparse

    from benchmarks.learning import add_learning_arguments

    parser = add_learning_arguments(argparse.ArgumentParser(), prefix="")
    options = learning_options(parser.parse_args(["--preset", "issue", "--steps", "300", "--sets", "B,C", "--hand-lr",
                                                  "1e-3", "--max-image-size", "128"]))  # fmt: skip
    assert (options.steps, options.sets, options.hand_lr, options.hidden_size) == (300, ("B", "C"), 1e-3, 192)
    assert (options.set_size(256), options.set_size(96)) == (128, 96)
    with pytest.raises(ValueError, match="unknown set 'D'; choose from A, B, C"):
        learning_main(["--preset", "ci", "--sets", "D", "--out", "unused"])
