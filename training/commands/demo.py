"""`eomt demo`: train a small EoMT from scratch on generated data and report PQ (`training.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.arguments import non_negative_int, positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="train a small EoMT from scratch on generated data and report PQ (CPU, about 5 minutes)"
    )
    parser.add_argument("--out", default="outputs/demo", help="output directory")
    parser.add_argument("--ablation", action="store_true",
                        help="train three variants (masked attention kept, mask annealing, none) and compare them")  # fmt: skip
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the data, the initialisation and the augmentation")  # fmt: skip
    parser.add_argument("--steps", type=positive_int, help="training steps (default: the recipe's)")
    parser.add_argument("--image-size", type=positive_int, help="side of the generated images, a multiple of 16")
    parser.add_argument("--quick", action="store_true", help="a run of seconds with a tiny model (for tests)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from training.demo import DemoRecipe, run_ablation, run_demo

    recipe = (DemoRecipe.quick() if args.quick else DemoRecipe()).replace(steps=args.steps, image_size=args.image_size)
    out = Path(args.out)
    if args.ablation:
        run_ablation(out, recipe, seed=args.seed)
        print((out / "ablation.md").read_text())
        print(f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")
        return 0
    summary = run_demo(out, recipe, seed=args.seed)
    quality, latency, total = summary["pq"], summary["forward_ms_per_image"], summary["timings"]["total"]
    for mode in ("mask-free", "masked"):
        print(f"PQ {quality[mode]['pq']:.1f} ({mode} inference, {latency[mode]:.2f} ms / image)")
    print(f"{total['wall_s'] / 60:.1f} min ({total['cpu_s'] / 60:.1f} CPU min); wrote {out}/: report.md, overlays.png, "
          "loss.png, annealing.png, metrics.json, model/, data/")
    return 0
