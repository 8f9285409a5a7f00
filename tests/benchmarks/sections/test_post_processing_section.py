"""The post-processing section runs ours and transformers' post-processing on the same outputs and compares them."""

from benchmarks.runner import run_benchmark
from benchmarks.sections import post_processing
from tests.benchmarks.helpers import parse


def test_post_processing_section_runs_and_both_sides_agree(capsys, monkeypatch):
    monkeypatch.setattr(post_processing, "PANOPTIC_CLASSES", 6)  # the cost of both sides grows with the classes
    monkeypatch.setattr(post_processing, "SEMANTIC_CLASSES", 6)
    args = parse("--sections", "post-processing", "--image-size", "64", "--queries", "20", "--repeats", "1",
                 "--warmup", "0", "--threads", "1")  # fmt: skip
    results = run_benchmark(args)
    assert [result.case for result in results] == [
        f"{task}{outputs}, batch {batch}"
        for outputs in ("", ", realistic outputs")
        for batch in (1, 2)
        for task in ("panoptic", "instance", "semantic")
    ]
    assert all(result.notes == "same output: yes" for result in results)
    assert all(result.ours.median > 0 and result.reference.median > 0 for result in results)
    assert "| post-processing | semantic, batch 1 |" in capsys.readouterr().out
