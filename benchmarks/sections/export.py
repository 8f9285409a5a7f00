"""export: the exported mask-free graph (`modeling_eomt.export`) run by torch.export and by onnxruntime on the CPU,
against the eager model in float32, with the same weights and input."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.context import BenchmarkContext, inference
from benchmarks.registry import Result, register_section
from modeling_eomt.export import export_onnx, export_program, logits_output, onnxruntime_session, run_onnx

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def max_logit_difference(actual: object, expected: object) -> float:
    """Largest absolute difference of the class and mask logits of two model outputs."""
    return max(
        (actual.class_queries_logits - expected.class_queries_logits).abs().max().item(),
        (actual.masks_queries_logits - expected.masks_queries_logits).abs().max().item(),
    )


@register_section("export", "exported graph: torch.export and onnxruntime (CPU) against eager fp32 (mask-free, batch 1)")
def export_section(context: BenchmarkContext) -> list[Result]:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing or context.device.type != "cpu":
        reason = f"{', '.join(missing)} not installed (the `export` extra)" if missing else "onnxruntime runs on CPU"
        print(f"export: skipped: {reason}", file=sys.stderr)
        return []
    pair = context.inference_pair()
    pixel_values = context.images(1)
    started = time.perf_counter()
    program = export_program(pair.ours, image_size=pixel_values.shape[-2:])
    exported_module = program.module()
    program_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        session = onnxruntime_session(export_onnx(program, Path(folder) / "model.onnx"), threads=context.args.threads)
        onnx_seconds = time.perf_counter() - started

        def exported() -> object:
            with torch.inference_mode():
                return logits_output(*exported_module(pixel_values))

        candidates: dict[str, Callable[[], object]] = {
            "eager": inference(pair.ours, pixel_values),
            "program": exported,
            "onnxruntime": lambda: run_onnx(session, pixel_values),
            "reference": inference(pair.reference, pixel_values),
        }
        expected = candidates["eager"]()
        differences = {name: max_logit_difference(candidates[name](), expected) for name in ("program", "onnxruntime")}
        times = context.time(candidates, "export")

    def row(name: str, baseline: str, case: str, notes: str) -> Result:
        extra = {"max_abs_difference": differences[name]} if name in differences else {}
        return Result.timed("export", case, times[name], times[baseline], notes=notes, extra=extra)

    threads = context.args.threads
    return [
        row("program", "eager", "torch.export program vs eager (ours, fp32)",
            f"exported in {program_seconds:.0f} s; max |logit difference| {differences['program']:.1e}"),
        row("onnxruntime", "eager", f"onnxruntime fp32 ({threads} threads) vs eager (ours, fp32)",
            f"ONNX written in {onnx_seconds:.0f} s; max |logit difference| {differences['onnxruntime']:.1e}"),
        row("onnxruntime", "reference", "onnxruntime fp32 vs transformers fp32", "the same weights and input"),
    ]  # fmt: skip
