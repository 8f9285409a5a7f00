"""fast: the fast inference options (`enable_fast_inference`: bf16 autocast, int8 linear layers on CPU, torch.compile)
against transformers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from benchmarks.context import BenchmarkContext, autocast_inference, fast_copy, first_call_seconds, inference
from benchmarks.registry import Result, register_section
from modeling_eomt import fast_paths
from modeling_eomt.quantization import check_int8_support


def relative_difference(run: Callable[[], Any], expected: Tensor) -> float:
    """Largest |mask logit - expected| over the largest |expected|."""
    actual = run().masks_queries_logits.float()
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@register_section("fast", "fast inference options against transformers in float32 (mask-free, batch 1)")
def fast_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    candidates = {
        "reference": inference(pair.reference, pixel_values),
        "ours": inference(pair.ours, pixel_values),
        "ours bf16": inference(fast_copy(pair, torch.bfloat16), pixel_values),
        "reference bf16": autocast_inference(pair.reference, pixel_values, torch.bfloat16),
    }
    if int8_supported(context.device):
        candidates["ours int8"] = inference(fast_copy(pair, "int8"), pixel_values)
    if context.args.compile:
        candidates["ours bf16 compiled"] = inference(fast_copy(pair, torch.bfloat16, compile=True), pixel_values)
        compile_seconds = first_call_seconds(candidates["ours bf16 compiled"])
    expected = candidates["ours"]().masks_queries_logits
    differences = {
        name: relative_difference(candidates[name], expected) for name in candidates if name.startswith("ours ")
    }
    times = context.time(candidates, "fast inference")

    def row(name: str, case: str, notes: str, baseline: str = "reference") -> Result:
        return Result.timed("fast", case, times[name], times[baseline], notes=notes)

    difference = differences["ours bf16"]
    bf16_note = (
        f"enable_fast_inference(torch.bfloat16); max difference to fp32 {difference:.1e} of the logit scale; "
        f"attention: {attention_kernel(context.device)}"
    )
    results = [
        row("ours", "ours fp32 vs transformers fp32", "no option"),
        row("ours bf16", "ours bf16 vs transformers fp32", bf16_note),
        row(
            "ours bf16",
            "ours bf16 vs transformers bf16 (autocast)",
            "the same precision on both sides",
            baseline="reference bf16",
        ),
    ]
    if "ours int8" in candidates:
        bits = "7-bit activations: no VNNI" if fast_paths.CPU_KERNELS.int8_reduce_range else "8-bit activations"
        rest = "bf16 autocast" if fast_paths.fast_autocast_dtype(context.device) else "fp32 (no fast bf16)"
        note = (
            f"enable_fast_inference('int8'): int8 linear layers (oneDNN, {bits}), the rest in {rest}; max difference "
            f"to fp32 {differences['ours int8']:.1e}"
        )
        results.append(row("ours int8", "ours int8 vs transformers fp32", note))
        same = "int8 linear layers against transformers' bf16 autocast"
        results.append(row("ours int8", "ours int8 vs transformers bf16 (autocast)", same, baseline="reference bf16"))
    if context.args.compile:
        note = (
            f"enable_fast_inference(torch.bfloat16, compile=True), compiled in {compile_seconds:.0f} s; max difference "
            f"to fp32 {differences['ours bf16 compiled']:.1e}"
        )
        results.append(row("ours bf16 compiled", "ours bf16 + torch.compile vs transformers fp32", note))
    return results


def int8_supported(device: torch.device) -> bool:
    try:
        check_int8_support(device)
    except ValueError:
        return False
    return True


def attention_kernel(device: torch.device) -> str:
    """The bf16 attention kernel on `device` (`fast_paths.CPU_KERNELS` on CPU) and why, for the notes."""
    if device.type != "cpu":
        return "SDPA"
    features = fast_paths.read_cpu_features()
    bf16_flags = ("avx512_bf16", "amx_bf16")
    flags = ", ".join(name for name in bf16_flags if getattr(features, name)) or "neither avx512_bf16 nor amx_bf16"
    matmuls = torch.bfloat16 in fast_paths.CPU_KERNELS.matmul_attention_dtypes
    return f"{'matmuls' if matmuls else 'SDPA'} (CPU: {flags})"
