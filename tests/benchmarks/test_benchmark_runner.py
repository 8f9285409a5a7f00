"""`run_benchmark` runs the selected sections on tiny models, prints the Markdown table and writes the JSON report."""

import json

from benchmarks.runner import run_benchmark
from tests.benchmarks.helpers import TINY, parse


def test_forward_end_to_end_and_throughput_sections_report_matching_models(tmp_path, capsys):
    out = tmp_path / "results.json"
    options = "--sections forward,end-to-end,throughput --image-size 32 --queries 5 --repeats 2 --warmup 0"
    options += " --e2e-batch-sizes 1,2 --threads 1 --matmul-size 256"  # one thread: no waiting on a busy core
    args = parse(*options.split(), "--out", str(out))
    results = run_benchmark(args, config_overrides=TINY)
    table = capsys.readouterr().out
    assert "| forward | mask-free (S/16, 32px, 5 queries)" in table  # the size name; TINY shrinks the model
    report = json.loads(out.read_text())
    assert [row["case"] for row in report["results"]] == [result.case for result in results]
    forward = [row for row in report["results"] if "max_abs_difference" in row]
    assert len(forward) == 2 and all(row["max_abs_difference"] < 1e-4 for row in forward)  # mask-free and masked
    assert all(row["ratio"]["median"] > 0 for row in report["results"] if row["ratio"])
    end_to_end = [row for row in report["results"] if row["section"] == "end-to-end"]
    assert [row["case"] for row in end_to_end] == [
        "image -> panoptic, batch 1 (24x32 images)",
        "image -> panoptic, batch 1 (24x32 images), ours bf16",
        "image -> panoptic, batch 2 (24x32 images)",
        "image -> panoptic, batch 2 (24x32 images), ours bf16",
    ]
    assert "100.0% of pixels agree" in end_to_end[0]["notes"] and "100.0% of pixels agree" in end_to_end[2]["notes"]
    ceiling = next(row for row in report["results"] if row["case"] == "matmul ceiling")
    assert ceiling["ours"]["median"] > 1e9  # FLOP/s of a 256 x 256 matmul
