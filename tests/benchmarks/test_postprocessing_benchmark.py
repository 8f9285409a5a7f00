"""The post-processing benchmark runs end to end on tiny settings and compares like with like."""

from benchmarks.postprocessing import markdown_table, run_postprocessing_benchmark, synthetic_outputs, window_offsets


def test_benchmark_runs_and_both_sides_agree():
    report = run_postprocessing_benchmark(
        batch_sizes=(1,), num_queries=20, input_size=64, panoptic_classes=6, semantic_classes=6,
        warmup=0, repeats=1, threads=1, progress=False,
    )
    rows = report["results"]
    assert [(row["task"], row["outputs"]) for row in rows] == [
        (task, outputs) for outputs in ("random", "realistic") for task in ("panoptic", "instance", "semantic")
    ]
    assert all(row["same_output"] and row["ours_ms"] > 0 and row["transformers_ms"] > 0 and row["cpu_ratio"] > 0 for row in rows)
    table = markdown_table(report)
    assert "| semantic | random | 1 | 1 |" in table and "| semantic | realistic | 1 | 1 |" in table


def test_synthetic_outputs_look_trained():
    class_logits, mask_logits = synthetic_outputs(3, num_queries=50, num_classes=10, mask_size=(32, 32), num_objects=(4, 8))
    confident = class_logits.softmax(-1)[..., :-1].amax(-1) > 0.5
    assert ((confident.sum(1) >= 4) & (confident.sum(1) <= 8)).all()
    no_object = class_logits.softmax(-1)[..., -1] > 0.9
    assert (no_object | confident).all()
    assert mask_logits.shape == (3, 50, 32, 32) and (mask_logits[confident] > 0).any()


def test_window_offsets_are_transformers_split():
    assert window_offsets((640, 853), 640, 1) == [(1, 0, 640), (1, 213, 853)]
    assert window_offsets((640, 640), 640, 0) == [(0, 0, 640)]
    assert window_offsets((2000, 640), 640, 0)[-1] == (0, 1360, 2000)
