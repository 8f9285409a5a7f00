"""gpu-fps: frames per second at batch 1 on CUDA (the paper's set-up: 640x640, 200 queries; published, H100: S 330,
B 261, L 128) for each inference path of `--gpu-paths`, in `--gpu-dtype`:

- static: `enable_fast_inference(dtype, compile=True, static_shape=(1, H, W))`, the forward pass as one CUDA graph with
  compiled blocks, against transformers' model compiled in the same run (the compile path), else under autocast;
- compile: `enable_fast_inference(dtype, compile=True)`, torch.compile of the whole forward pass, against transformers'
  model compiled the same way.

FPS: `--gpu-iterations` back-to-back calls per timed repetition, synchronised after the last; the static path also
notes its latency with a synchronisation after every call. Each row notes how far the logits are from float32
(`relative_logit_difference`: the largest difference over the largest float32 logit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from benchmarks.context import (
    BenchmarkContext,
    autocast_inference,
    compiled_reference,
    fast_copy,
    first_call_seconds,
    float32_output,
    inference,
    relative_logit_difference,
    repeated,
)
from benchmarks.measure import Stats, paired_ratios
from benchmarks.registry import Result, register_section
from modeling_eomt.static_inference import describe_set_up

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def static_path_note(model: torch.nn.Module, compile_backend: str) -> str:
    """How `model`'s static path runs: as a CUDA graph or not, its blocks and its attention kernel."""
    static = model.static_inference
    graph = "CUDA graph" if static.uses_cuda_graph else "no CUDA graph"
    backend = compile_backend if static.blocks_compiled else None
    return f"{graph} of {describe_set_up(backend, static.attention_backend)}"


@register_section(
    "gpu-fps",
    "frames per second on CUDA, batch 1: static path (CUDA graph) and torch.compile, against transformers' model "
    "(published, H100: S 330, B 261, L 128)",
    cuda_only=True,
)
def gpu_fps_section(context: BenchmarkContext) -> Iterator[Result]:
    return size_by_size(context, size_fps)


def size_by_size(context: BenchmarkContext, rows: Callable[[BenchmarkContext, str], list[Result]]) -> Iterator[Result]:
    """`rows(context, size)` for each size of `--gpu-sizes`, yielded as they come (a run stopped part-way keeps the
    sizes done), each size with fresh models and a fresh compilation cache (recompilation limits count per function)."""
    for size in context.args.gpu_sizes:
        torch.compiler.reset()
        yield from rows(context, size)
        context.release_models()


def size_fps(context: BenchmarkContext, size: str) -> list[Result]:
    """The rows of one ViT size."""
    args = context.args
    dtype, backend, side, calls = DTYPES[args.gpu_dtype], args.compile_backend, args.image_size, args.gpu_iterations
    pair = context.inference_pair(size=size)
    pixel_values = context.images(1)
    expected = float32_output(pair.ours, pixel_values)
    candidates = {}
    if "static" in args.gpu_paths:
        static = fast_copy(pair, dtype, compile=backend, static_shape=(1, side, side))
        candidates["static"] = inference(static, pixel_values)
    if "compile" in args.gpu_paths:
        candidates["compile"] = inference(fast_copy(pair, dtype, compile=backend), pixel_values)
        candidates["reference"] = autocast_inference(compiled_reference(pair.reference, backend), pixel_values, dtype)
    else:
        candidates["reference"] = autocast_inference(pair.reference, pixel_values, dtype)
    seconds = {name: first_call_seconds(run) for name, run in candidates.items()}  # compilation, capture
    differences = {name: relative_logit_difference(run(), expected) for name, run in candidates.items()}
    times = context.time({name: repeated(run, calls) for name, run in candidates.items()}, f"ViT-{size} FPS")
    fps = {name: Stats.of([calls / elapsed for elapsed in samples]) for name, samples in times.items()}
    shape = f"ViT-{size}/16, {side}px, {args.queries} queries, {args.gpu_dtype}"

    def row(name: str, case: str, notes: str, **extra: float) -> Result:
        notes += (
            f"; logits vs float32: ours {differences[name]:.1e}, transformers {differences['reference']:.1e} of their "
            "scale; ratio of times"
        )
        extra = {
            "fps": fps[name].median,
            "reference_fps": fps["reference"].median,
            "relative_logit_difference": differences[name],
            "reference_relative_logit_difference": differences["reference"],
            "first_call_seconds": seconds[name],
            "reference_first_call_seconds": seconds["reference"],
            **extra,
        }
        ratio = paired_ratios(times[name], times["reference"])
        return Result("gpu-fps", case, fps[name], fps["reference"], ratio, unit="FPS", notes=notes, extra=extra)

    results = []
    if "static" in candidates:
        latency = Stats.of(context.time({"static": candidates["static"]}, f"ViT-{size} latency")["static"]).median
        reference_kind = "compiled" if "compile" in candidates else "eager, autocast"
        notes = (
            f"{static_path_note(static, backend)}; set up in {seconds['static']:.0f} s; latency "
            f"{latency * 1e3:.2f} ms synchronised per call; transformers {reference_kind}"
        )
        results.append(row("static", f"{shape}, static path", notes, latency_seconds=latency))
    if "compile" in candidates:
        notes = (
            f"torch.compile ({backend}) of the whole forward; compiled in {seconds['compile']:.0f} s / "
            f"{seconds['reference']:.0f} s"
        )
        results.append(row("compile", f"{shape}, torch.compile", notes))
    return results
