"""The `eomt` command: one sub-command per job (`eomt --help` lists them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]


def _quickstart(args: argparse.Namespace) -> int:
    from training.quickstart import run_quickstart

    summary = run_quickstart(args.out, image_size=args.image_size, seed=args.seed)
    print(f"class logits {summary['class_logits_shape']}, mask logits {summary['mask_logits_shape']}, "
          f"forward {summary['forward_seconds'] * 1000:.1f} ms")
    print("pixels per class: " + ", ".join(f"{name} {count}" for name, count in summary["pixels_per_class"].items()))
    print(f"reload identical: {summary['reload_identical']}")
    print(f"wrote {summary['overlay']} and {summary['model_dir']}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eomt", description="EoMT: train, evaluate, run and convert segmentation models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser("quickstart", help="segment a generated image with a small random EoMT (no download)")
    quickstart.add_argument("--out", default="outputs/quickstart", help="output directory")
    quickstart.add_argument("--image-size", type=int, default=128, help="side of the generated image (multiple of 16)")
    quickstart.add_argument("--seed", type=int, default=0)
    quickstart.set_defaults(run=_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Command = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
