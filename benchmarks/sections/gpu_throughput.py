"""gpu-throughput: images per second on CUDA at the batch sizes of `--gpu-batch-sizes` (default 8 and 32), for each
ViT size of `--gpu-sizes`, in `--gpu-dtype`: the static path (`enable_fast_inference(dtype, compile=True,
static_shape=(B, H, W))`) and our model under autocast, both against transformers' model under the same autocast."""

from __future__ import annotations

from collections.abc import Iterator


from benchmarks.context import (
    BenchmarkContext,
    autocast_inference,
    fast_copy,
    first_call_seconds,
    float32_output,
    inference,
    relative_logit_difference,
)
from benchmarks.measure import Stats, paired_ratios
from benchmarks.registry import Result, register_section
from benchmarks.sections.gpu_fps import DTYPES, size_by_size, static_path_note


@register_section(
    "gpu-throughput",
    "images per second on CUDA at larger batches (--gpu-batch-sizes): static path and autocast against transformers",
    cuda_only=True,
)
def gpu_throughput_section(context: BenchmarkContext) -> Iterator[Result]:
    return size_by_size(context, size_throughput)


def size_throughput(context: BenchmarkContext, size: str) -> list[Result]:
    """The rows of one ViT size, two per batch size."""
    args = context.args
    dtype, side = DTYPES[args.gpu_dtype], args.image_size
    pair = context.inference_pair(size=size)
    static = fast_copy(pair, dtype)
    results = []
    for batch_size in args.gpu_batch_sizes:
        pixel_values = context.images(batch_size)
        expected = float32_output(pair.ours, pixel_values)
        static.enable_fast_inference(dtype, compile=args.compile_backend, static_shape=(batch_size, side, side))
        candidates = {
            "static": inference(static, pixel_values),
            "autocast": autocast_inference(pair.ours, pixel_values, dtype),
            "reference": autocast_inference(pair.reference, pixel_values, dtype),
        }
        setup_seconds = first_call_seconds(candidates["static"])
        differences = {name: relative_logit_difference(run(), expected) for name, run in candidates.items()}
        del expected
        times = context.time(candidates, f"ViT-{size} batch {batch_size}")
        rate = {name: Stats.of([batch_size / elapsed for elapsed in samples]) for name, samples in times.items()}
        shape = f"ViT-{size}/16, {side}px, {args.queries} queries, batch {batch_size}, {args.gpu_dtype}"
        cases = {
            "static": (
                "static path",
                f"{static_path_note(static, args.compile_backend)}; set up in {setup_seconds:.0f} s",
            ),
            "autocast": ("autocast", "enable_fast_inference's dtype without the static path"),
        }
        for name, (case, notes) in cases.items():
            notes += (
                f"; logits vs float32: ours {differences[name]:.1e}, transformers {differences['reference']:.1e} of "
                "their scale; ratio of times"
            )
            ratio = paired_ratios(times[name], times["reference"])
            extra = {"batch_size": batch_size, "relative_logit_difference": differences[name]}
            results.append(
                Result("gpu-throughput", f"{shape}, {case}", rate[name], rate["reference"], ratio, "images/s", notes,
                       extra)  # fmt: skip
            )
    return results
