"""learning: `eomt train` with its defaults against transformers' EoMT in a hand-written loop, trained from scratch on
generated panoptic sets unlike the demo's (`benchmarks.learning`; named only, it trains models for minutes)."""

from __future__ import annotations

from benchmarks.context import BenchmarkContext
from benchmarks.learning import CALIBRATED, learning_options, run_learning
from benchmarks.measure import Stats
from benchmarks.registry import Result, register_section


@register_section("learning", "learning on unseen data: eomt train vs a hand loop (benchmarks.learning)", in_all=False)
def learning_section(context: BenchmarkContext) -> list[Result]:
    """`eomt benchmark --sections learning`: one row per set, train seconds of `eomt train` and the hand loop, PQ in
    the notes (the full table, JSON and plot are written to `--learning-out`)."""
    options = learning_options(context.args)
    results = run_learning(options, context.args.learning_out, context.device.type)
    rows = []
    for result in results:
        ours, hand, calibrated = (result["runs"][run] for run in ("eomt train", "hand loop", CALIBRATED))
        notes = (f"PQ {ours['pq']:.1f} vs {hand['pq']:.1f} ({calibrated['pq']:.1f} calibrated), things "
                 f"{ours['pq_things']:.1f} vs {hand['pq_things']:.1f} (test split, each model's post-processing; "
                 f"{options.steps} steps; eomt train vs hand loop)")  # fmt: skip
        seconds = ours["train_seconds"], hand["train_seconds"]
        rows.append(Result(
            "learning", f"set {result['set']} ({result['image_size']} px): {result['description']}",
            Stats.of([seconds[0]]), Stats.of([seconds[1]]), Stats.of([seconds[0] / seconds[1]]), notes=notes,
            extra={"learning": {run: {k: v for k, v in m.items() if k != "recipe"} for run, m in result["runs"].items()}},
        ))  # fmt: skip
    return rows
