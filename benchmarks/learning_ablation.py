"""Which recipe setting made `eomt train` fail on unseen data: one-factor ablations on a set of the learning benchmark.

    nice -n 10 python -m benchmarks.learning_ablation --set A --variants old,new,new-clip,... --out outputs/ablation

Every variant is `eomt train` (through `benchmarks.learning.run_set`) with `TrainSettings` overrides; `old` is what
`eomt train` did before it chose a recipe (the issue's run: the authors' lr schedule and clipping for a pre-trained
backbone, COCO's scale jitter, lr 3e-4 without layer decay), with the warm-ups scaled to the run's length as 500 + 1000
steps are to the issue's 1200; `new` is what `eomt train` chooses today (the from-scratch recipe), `new-x` / `new+x`
change one of its settings. `hand` is the benchmark's hand loop. Results are appended
to `ablation.jsonl` in `--out` (one line per run) and the table of all runs so far is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.learning import THRESHOLDS, LearningOptions, add_learning_arguments, learning_options, run_set
from training.recipe import SCRATCH_WARMUP_FRACTION


def old_defaults(steps: int) -> dict[str, Any]:
    """`eomt train` before this change, as the issue ran it (lr 3e-4, layer decay 1), warm-ups scaled to `steps`."""
    return dict(recipe="authors", learning_rate=3e-4, layer_decay=1.0, max_grad_norm=0.01,
                head_warmup_steps=round(500 / 1200 * steps), backbone_warmup_steps=round(1000 / 1200 * steps),
                augmentation_scale=(0.1, 2.0), color_jitter=False)  # fmt: skip


def variants(options: LearningOptions) -> dict[str, dict[str, Any] | None]:
    """Name -> `TrainSettings` overrides (None: the hand loop)."""
    old = old_defaults(options.steps)
    warmup = max(1, round(SCRATCH_WARMUP_FRACTION * options.steps))
    new: dict[str, Any] = {}  # today's defaults, each variant below changes one of them
    return {
        "hand": None,
        "old": old,
        "old+scale0.5-1.5": {**old, "augmentation_scale": (0.5, 1.5)},
        "old+scale(rule)": {**{k: v for k, v in old.items() if k != "augmentation_scale"}, "recipe": "scratch"},
        "old+noscale": {**old, "augmentation_scale": (1.0, 1.0)},
        "old+clip1": {**old, "max_grad_norm": 1.0},
        "old+warmup5%": {**old, "head_warmup_steps": warmup, "backbone_warmup_steps": 0},
        "old+lr1e-3": {**old, "learning_rate": 1e-3},
        "old+noobj0.5": {**old, "no_object_weight": 0.5},
        "new": new,
        "new-scale(0.1-2)": {**new, "augmentation_scale": (0.1, 2.0)},
        "new-scale(0.5-1.5)": {**new, "augmentation_scale": (0.5, 1.5)},
        "new-scale(0.8-1.25)": {**new, "augmentation_scale": (0.8, 1.25)},
        "new-scale(1-1)": {**new, "augmentation_scale": (1.0, 1.0)},
        # the object-size rule's ranges (median thing one patch across) of sets A, B and C (at 128 px)
        "new-scale(0.35-2)": {**new, "augmentation_scale": (0.35, 2.0)},
        "new-scale(0.9-2)": {**new, "augmentation_scale": (0.9, 2.0)},
        "new-scale(0.25-2)": {**new, "augmentation_scale": (0.25, 2.0)},
        "new-clip(0.01)": {**new, "max_grad_norm": 0.01},
        "new-warmup(old)": {**new, "head_warmup_steps": old["head_warmup_steps"],
                            "backbone_warmup_steps": old["backbone_warmup_steps"]},
        # `new` warms the backbone up over 20% of the steps; before 2026-12-05 it had none (see learning-ablation.md)
        "new-backbone-warmup(0)": {**new, "backbone_warmup_steps": 0},
        "new-backbone-warmup(5%)": {**new, "backbone_warmup_steps": warmup},
        "new-lr(3e-4)": {**new, "learning_rate": 3e-4},
        "new-lr(5e-4)": {**new, "learning_rate": 5e-4},
        "new-lr(2e-3)": {**new, "learning_rate": 2e-3},
        "new+layerdecay0.8": {**new, "layer_decay": 0.8},
        "new+noobj0.05": {**new, "no_object_weight": 0.05},
        "new+noobj0.3": {**new, "no_object_weight": 0.3},
        "new+noobj1": {**new, "no_object_weight": 1.0},
        "new+colorjitter": {**new, "color_jitter": True},
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    header = ["set", "variant", "PQ", "things", "stuff", *(f"PQ@{t:g}" for t in THRESHOLDS), "things@0.5", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        m = row["metrics"]
        cells = [row["set"], row["variant"], *(f"{m[k]:.1f}" for k in ("pq", "pq_things", "pq_stuff")),
                 *(f"{m[f'pq@{t:g}']:.1f}" for t in THRESHOLDS), f"{m['pq_things@0.5']:.1f}",
                 f"{m['train_seconds']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning_ablation", description=__doc__.split("\n\n")[0])
    add_learning_arguments(parser, prefix="")
    parser.add_argument("--set", dest="set_name", default="A", help="the set (default A)")
    parser.add_argument("--variants", default="old,new", help="comma-separated names of `variants` (default old,new)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    options = learning_options(args)
    known = variants(options)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(known)}")
    out: Path = args.learning_out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "ablation.jsonl"
    for name in names:
        overrides = known[name]
        runs = ("hand loop",) if overrides is None else ("eomt train",)
        result = run_set(args.set_name, options, out, args.device, runs=runs, **(overrides or {}))
        metrics = next(iter(result["runs"].values()))
        row = {"set": args.set_name, "variant": name, "image_size": result["image_size"],
               "description": result["description"], "overrides": overrides, "options": dataclasses.asdict(options),
               "metrics": {k: v for k, v in metrics.items() if k != "recipe"}, "recipe": metrics.get("recipe")}  # fmt: skip
        with log.open("a") as file:
            file.write(json.dumps(row, default=str) + "\n")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
