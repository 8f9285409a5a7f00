"""throughput: achieved GFLOP/s of the model and its encoder against the measured fp32 matmul rate."""

from __future__ import annotations

import torch

from benchmarks.context import BenchmarkContext, inference
from benchmarks.measure import Stats, count_flops, paired_ratios
from benchmarks.registry import Result, register_section


@register_section("throughput", "achieved GFLOP/s against the measured fp32 matmul throughput (mask-free, batch 1)")
def throughput_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    with torch.inference_mode():
        model_flops = count_flops(lambda: pair.ours(pixel_values))
        encoder_flops = count_flops(lambda: pair.ours.eomt(pixel_values))
    size = context.args.matmul_size
    a, b = (torch.randn(size, size, device=context.device) for _ in range(2))
    times = context.time(
        {
            "matmul": lambda: torch.mm(a, b),
            "ours encoder": inference(pair.ours.eomt, pixel_values),
            "ours": inference(pair.ours, pixel_values),
            "reference": inference(pair.reference, pixel_values),
        },
        "throughput",
    )
    ceiling = [2 * size**3 / seconds for seconds in times["matmul"]]

    def achieved(flops: int, name: str) -> Stats:
        return Stats.of([flops / seconds for seconds in times[name]])

    def fraction_of_ceiling(flops: int, name: str) -> Stats:
        return Stats.of([flops / seconds / peak for seconds, peak in zip(times[name], ceiling)])

    matmul_note = f"torch.mm {size}x{size} fp32, {context.args.threads} threads"
    return [
        Result("throughput", "matmul ceiling", Stats.of(ceiling), unit="FLOP/s", notes=matmul_note),
        Result(
            "throughput",
            f"model ({model_flops / 1e9:.1f} GFLOP)",
            achieved(model_flops, "ours"),
            achieved(model_flops, "reference"),
            paired_ratios(times["reference"], times["ours"]),
            unit="FLOP/s",
            notes=f"fraction of ceiling: ours {fraction_of_ceiling(model_flops, 'ours').median:.2f}, "
            f"transformers {fraction_of_ceiling(model_flops, 'reference').median:.2f}",
        ),
        Result(
            "throughput",
            f"encoder ({encoder_flops / 1e9:.1f} GFLOP), fraction of ceiling",
            fraction_of_ceiling(encoder_flops, "ours encoder"),
            unit="fraction",
            notes="matmuls, convolutions and attention counted by FlopCounterMode; norms and activations not",
        ),
    ]
