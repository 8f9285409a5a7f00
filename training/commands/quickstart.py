"""`eomt quickstart`: segment a generated image with a small random EoMT (no download)."""

from __future__ import annotations

import argparse

from training.commands.arguments import non_negative_int, positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("quickstart", help="segment a generated image with a small random EoMT (no download)")
    parser.add_argument("--out", default="outputs/quickstart", help="output directory")
    parser.add_argument("--image-size", type=positive_int, default=128,
                        help="side of the generated image (multiple of 16)")  # fmt: skip
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from training.quickstart import run_quickstart

    summary = run_quickstart(args.out, image_size=args.image_size, seed=args.seed)
    print(f"class logits {summary['class_logits_shape']}, mask logits {summary['mask_logits_shape']}, "
          f"forward {summary['forward_seconds'] * 1000:.1f} ms")
    print("pixels per class: " + ", ".join(f"{name} {count}" for name, count in summary["pixels_per_class"].items()))
    print(f"reload identical: {summary['reload_identical']}")
    print(f"wrote {summary['overlay']} and {summary['model_dir']}/")
    return 0
