"""profile: where the forward time goes, torch.profiler self time per operator (run only when named)."""

from __future__ import annotations

import torch

from benchmarks.context import BenchmarkContext, inference
from benchmarks.measure import Stats
from benchmarks.registry import Result, register_section


@register_section(
    "profile", "where the forward time goes: torch.profiler self time per operator (mask-free, batch 1)", in_all=False
)
def profile_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    seconds: dict[str, dict[str, float]] = {}
    for name, model in (("ours", pair.ours), ("reference", pair.reference)):
        run = inference(model, pixel_values)
        run()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(context.repeats):
                run()
        seconds[name] = {
            event.key: event.self_cpu_time_total / 1e6 / context.repeats for event in profiler.key_averages()
        }
    operators = sorted(set(seconds["ours"]) | set(seconds["reference"]), key=lambda key: -seconds["ours"].get(key, 0.0))
    results = []
    for operator in operators[: context.args.profile_rows]:
        ours, reference = seconds["ours"].get(operator, 0.0), seconds["reference"].get(operator, 0.0)
        results.append(
            Result(
                "profile",
                operator,
                Stats.of([ours]),
                Stats.of([reference]),
                Stats.of([ours / reference]) if reference else None,
                notes="mean self time per forward",
            )
        )
    totals = [sum(seconds[name].values()) for name in ("ours", "reference")]
    results.append(
        Result(
            "profile",
            "total",
            Stats.of([totals[0]]),
            Stats.of([totals[1]]),
            Stats.of([totals[0] / totals[1]]),
            notes="profiled one model after the other (not interleaved)",
        )
    )
    return results
