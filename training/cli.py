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


def _predict(args: argparse.Namespace) -> int:
    from training.predict import run_predict

    return run_predict(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eomt", description="EoMT: train, evaluate, run and convert segmentation models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser("quickstart", help="segment a generated image with a small random EoMT (no download)")
    quickstart.add_argument("--out", default="outputs/quickstart", help="output directory")
    quickstart.add_argument("--image-size", type=int, default=128, help="side of the generated image (multiple of 16)")
    quickstart.add_argument("--seed", type=int, default=0)
    quickstart.set_defaults(run=_quickstart)

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

    predict = commands.add_parser(
        "predict",
        help="segment image files; write overlays and COCO-format results",
        description="Segment images with an EoMT checkpoint (this package's or transformers' format, or the authors' "
        "original .bin/.ckpt, converted on the fly). Writes OUT/overlays/*.png and OUT/predictions.json, plus "
        "OUT/panoptic/*.png (COCO panoptic PNGs) or OUT/semantic/*.png (class-index PNGs). Exit status: 0 all "
        "images done, 1 some inputs unreadable (the others are done), 2 unusable model, device or option.",
    )
    predict.add_argument("model", help="model directory or Hub id, or the authors' original checkpoint file")
    predict.add_argument("images", nargs="+", help="image files, directories, or glob patterns (quoted)")
    predict.add_argument("--task", choices=("panoptic", "instance", "semantic"), default="panoptic")
    predict.add_argument("--out", default="outputs/predict", help="output directory (default: outputs/predict)")
    predict.add_argument("--recursive", action="store_true", help="also images in sub-directories (and ** in globs)")
    predict.add_argument("--batch-size", type=int, default=1, help="images per forward pass, of any sizes (default: 1)")
    predict.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    predict.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
        help="float32 (default), or autocast to bfloat16 (about 1.3x faster on CPU) or float16 (GPUs; slow on CPU)",
    )  # fmt: skip
    predict.add_argument("--threshold", type=float, default=0.8, help="panoptic, instance: min. score (default: 0.8)")
    predict.add_argument("--mask-threshold", type=float, default=0.5, help="panoptic: mask probability (default: 0.5)")
    predict.add_argument(
        "--overlap-threshold", type=float, default=0.8,
        help="panoptic: fraction of its mask a segment must keep (default: 0.8)",
    )  # fmt: skip
    predict.add_argument(
        "--stuff-classes",
        help="panoptic: class indices fused into one segment per image, comma-separated, or 'none' "
        "(default: the processor's; COCO's for COCO's panoptic classes)",
    )
    predict.add_argument("--num-heads", type=int, help="original checkpoints: attention heads (default: width / 64)")
    predict.add_argument("--image-size", type=int, help="original checkpoints: input size (default: the stored grid)")
    predict.add_argument("--dataset", choices=("coco_panoptic", "coco_instance", "ade20k", "cityscapes"))
    predict.add_argument("--delta-base", help="the DINOv3 checkpoint the authors' DINOv3 (delta) weights add to")
    predict.set_defaults(run=_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Command = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
