"""The `eomt` command: one sub-command per job (`eomt --help` lists them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
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


def _demo(args: argparse.Namespace) -> int:
    from training.demo import DemoRecipe, run_ablation, run_demo

    recipe = DemoRecipe.quick() if args.quick else DemoRecipe()
    recipe = recipe.replace(steps=args.steps, image_size=args.image_size)
    if args.ablation:
        summary = run_ablation(args.out, recipe, seed=args.seed)
        print((Path(args.out) / "ablation.md").read_text())
        return 0
    summary = run_demo(args.out, recipe, seed=args.seed)
    quality, latency = summary["pq"], summary["forward_ms_per_image"]
    total = summary["timings"]["total"]
    for mode in ("mask-free", "masked"):
        print(f"PQ {quality[mode]['pq']:.1f} ({mode} inference, {latency[mode]:.2f} ms / image)")
    print(f"{total['wall_s'] / 60:.1f} min ({total['cpu_s'] / 60:.1f} CPU min); wrote {args.out}/report.md, overlays.png, "
          "loss.png, annealing.png, model/")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from modeling_eomt.conversion import convert_checkpoint

    overrides = {"num_attention_heads": args.num_heads, "image_size": args.image_size}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    model = convert_checkpoint(
        args.source, args.output, args.source_format, args.target_format, args.delta_base, args.dataset, **overrides
    )
    config = model.config
    backbone = "DINOv3" if config.position_embedding_type == "rope" else "DINOv2"
    print(
        f"{backbone} ViT: hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads} heads, {config.num_register_tokens} registers, {config.ffn_type} FFN, "
        f"patch {config.patch_size}, image {config.image_size}; {config.num_queries} queries, "
        f"{config.num_labels} classes, masked attention in the last {config.num_blocks} blocks"
    )
    print(f"wrote {args.output}/ ({args.target_format} format)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eomt", description="EoMT: train, evaluate, run and convert segmentation models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser("quickstart", help="segment a generated image with a small random EoMT (no download)")
    quickstart.add_argument("--out", default="outputs/quickstart", help="output directory")
    quickstart.add_argument("--image-size", type=int, default=128, help="side of the generated image (multiple of 16)")
    quickstart.add_argument("--seed", type=int, default=0)
    quickstart.set_defaults(run=_quickstart)

    demo = commands.add_parser(
        "demo", help="train a small EoMT from scratch on generated data (CPU, about 10 minutes) and report PQ"
    )
    demo.add_argument("--out", default="outputs/demo", help="output directory")
    demo.add_argument("--ablation", action="store_true",
                      help="train the three variants: masked attention kept, mask annealing, no masked attention")  # fmt: skip
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, the initialisation and the augmentation")
    demo.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    demo.add_argument("--image-size", type=int, help="side of the generated images, a multiple of 16")
    demo.add_argument("--quick", action="store_true", help="a run of seconds with a tiny model (for tests)")
    demo.set_defaults(run=_demo)

    convert = commands.add_parser("convert", help="convert the authors' original or transformers' EoMT checkpoints")
    convert.add_argument("source", help="original .bin/.ckpt/.safetensors file, or a checkpoint directory or Hub id")
    convert.add_argument("output", help="output directory")
    convert.add_argument("--from", dest="source_format", default="auto", choices=("auto", "original", "transformers", "ours"))
    convert.add_argument("--to", dest="target_format", default="ours", choices=("ours", "transformers"))
    convert.add_argument("--num-heads", type=int, help="attention heads (default: width / 64, as in DINOv2/DINOv3)")
    convert.add_argument("--image-size", type=int, help="input size (default: the stored grid; 640 for DINOv3)")
    convert.add_argument("--dataset", choices=("coco_panoptic", "coco_instance", "ade20k", "cityscapes"), help="class names")
    convert.add_argument("--delta-base", help="the DINOv3 checkpoint the authors' DINOv3 (delta) weights add to")
    convert.set_defaults(run=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Command = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
