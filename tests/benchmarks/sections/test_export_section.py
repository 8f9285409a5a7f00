"""The export section times the exported graph (torch.export, onnxruntime) against the eager model, same weights."""

from tests.benchmarks.helpers import run_tiny_section


def test_export_section_times_the_exported_graphs_and_checks_their_logits():
    results = run_tiny_section("export")
    assert [result.case for result in results] == [
        "torch.export program vs eager (ours, fp32)",
        "onnxruntime fp32 (1 threads) vs eager (ours, fp32)",
        "onnxruntime fp32 vs transformers fp32",
    ]
    assert all(result.ratio.median > 0 and result.ratio.n == 2 for result in results)
    assert results[0].extra["max_abs_difference"] < 1e-3
    assert results[1].extra["max_abs_difference"] < 1e-3
