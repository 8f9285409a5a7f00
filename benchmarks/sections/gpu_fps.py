"""gpu-fps: frames per second of ViT-S/B/L at 640 on CUDA with bf16 and torch.compile (the paper's FPS set-up)."""

from __future__ import annotations

import torch

from benchmarks.context import BenchmarkContext, autocast_inference, first_call_seconds, inference
from benchmarks.measure import Stats, paired_ratios
from benchmarks.registry import Result, register_section


@register_section(
    "gpu-fps",
    "frames per second on CUDA, 640x640, batch 1, bf16, torch.compile (published, H100: S 330, B 261, L 128)",
    cuda_only=True,
)
def gpu_fps_section(context: BenchmarkContext) -> list[Result]:
    results = []
    for size in context.args.gpu_sizes.split(","):
        pair = context.inference_pair(image_size=640, num_queries=200, size=size.strip())
        pixel_values = context.images(1, image_size=640)
        ours = inference(pair.ours.enable_fast_inference(torch.bfloat16, compile=True), pixel_values)
        reference = torch.compile(pair.reference, options={"freezing": True})
        reference = autocast_inference(reference, pixel_values, torch.bfloat16)
        seconds = {name: first_call_seconds(run) for name, run in (("ours", ours), ("reference", reference))}
        times = context.time({"ours": ours, "reference": reference}, f"ViT-{size} FPS")
        fps = {name: Stats.of([1 / elapsed for elapsed in samples]) for name, samples in times.items()}
        results.append(
            Result(
                "gpu-fps",
                f"ViT-{size}/16, 640px, 200 queries",
                fps["ours"],
                fps["reference"],
                paired_ratios(times["ours"], times["reference"]),
                unit="FPS",
                notes=f"ratio of times; compiled in {seconds['ours']:.0f} s / {seconds['reference']:.0f} s",
            )
        )
    return results
