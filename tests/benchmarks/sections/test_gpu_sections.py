"""The CUDA sections, rehearsed on the CPU (`--rehearse`, tiny models): their rows, units and precision checks."""

from tests.benchmarks.helpers import run_tiny_section


def test_gpu_fps_and_throughput_rows():
    options = ["--rehearse", "--gpu-sizes", "S", "--gpu-batch-sizes", "2", "--gpu-iterations", "2"]
    results = run_tiny_section("gpu-fps,gpu-throughput", *options, "--compile-backend", "aot_eager")
    assert [(result.section, result.case.rsplit(", ", 1)[-1], result.unit) for result in results] == [
        ("gpu-fps", "static path", "FPS"),
        ("gpu-fps", "torch.compile", "FPS"),
        ("gpu-throughput", "static path", "images/s"),
        ("gpu-throughput", "autocast", "images/s"),
    ]
    for result in results:
        assert 0 < result.extra["relative_logit_difference"] < 1e-2  # float16 against float32
        assert result.ours.median > 0 and result.reference.median > 0 and result.ratio.median > 0
    static = results[0]
    assert static.extra["fps"] == static.ours.median and static.extra["latency_seconds"] > 0
    assert "no CUDA graph of blocks compiled by aot_eager with the default attention" in static.notes and "transformers compiled" in static.notes  # the compile path ran too
    assert "transformers" in results[1].notes and "compiled in" in results[1].notes
    assert results[2].extra["batch_size"] == 2
