"""forward: latency of one forward pass, batch 1, mask-free and with masked attention in every masked block."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from benchmarks.context import BenchmarkContext, inference, max_output_difference, set_mask_probability
from benchmarks.measure import paired_ratios
from benchmarks.registry import Result, register_section


@register_section("forward", "forward latency, batch 1, mask-free (p = 0) and masked attention (p = 1)")
def forward_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    differences = {}
    for probability in (0.0, 1.0):
        pair.set_mask_probability(probability)
        differences[probability] = max_output_difference(pair, pixel_values)

    def at_probability(model: nn.Module, probability: float) -> Callable[[], object]:
        run = inference(model, pixel_values)

        def run_at() -> object:
            set_mask_probability(model, probability)
            return run()

        return run_at

    times = context.time(
        {
            "ours mask-free": at_probability(pair.ours, 0.0),
            "reference mask-free": at_probability(pair.reference, 0.0),
            "ours masked": at_probability(pair.ours, 1.0),
            "reference masked": at_probability(pair.reference, 1.0),
        },
        "forward",
    )
    shape = f"{context.args.size}/16, {context.args.image_size}px, {context.args.queries} queries"
    results = []
    for probability, name in ((0.0, "mask-free"), (1.0, "masked")):
        results.append(
            Result.timed(
                "forward",
                f"{name} ({shape})",
                times[f"ours {name}"],
                times[f"reference {name}"],
                notes=f"max |ours - transformers| = {differences[probability]:.1e}",
                extra={"max_abs_difference": differences[probability]},
            )
        )
    results.append(
        Result(
            "forward",
            "masked / mask-free, ours",
            ratio=paired_ratios(times["ours masked"], times["ours mask-free"]),
            unit="ratio",
            notes="cost of masked attention at inference (transformers: "
            f"{paired_ratios(times['reference masked'], times['reference mask-free']).median:.2f})",
        )
    )
    return results
