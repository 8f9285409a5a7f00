"""The fast section times bf16 and int8 inference against transformers' float32 and bf16 forward, same weights."""

import torch

from benchmarks.sections import fast
from modeling_eomt import fast_paths
from tests.benchmarks.helpers import run_tiny_section
from tests.modeling.helpers import int8_tolerance


def test_fast_section_reports_bf16_and_int8_with_the_attention_kernel():
    results = {result.case: result for result in run_tiny_section("fast")}
    int8 = ["ours int8 vs transformers fp32", "ours int8 vs transformers bf16 (autocast)"]
    assert list(results) == [
        "ours fp32 vs transformers fp32",
        "ours bf16 vs transformers fp32",
        "ours bf16 vs transformers bf16 (autocast)",
        *(int8 if fast.int8_supported(torch.device("cpu")) else []),  # x86 builds of PyTorch
    ]
    assert all(result.ratio.median > 0 for result in results.values())
    matmuls = torch.bfloat16 in fast_paths.CPU_KERNELS.matmul_attention_dtypes
    kernel = fast.attention_kernel(torch.device("cpu"))
    assert kernel.startswith("matmuls (CPU: " if matmuls else "SDPA (CPU: ")
    assert f"attention: {kernel}" in results["ours bf16 vs transformers fp32"].notes
    if int8[0] in results:
        difference = float(results[int8[0]].notes.rsplit(" ", 1)[-1])
        assert 0 < difference < int8_tolerance(0.05)  # of the logit scale
