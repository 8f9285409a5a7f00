"""`eomt predict`: segment image files with an EoMT checkpoint; write overlays and COCO-format results.

The arguments become a model, a processor, image paths and options here; `training.inference.predict_files` does
the work and documents the files it writes.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

from training.commands.arguments import (
    InputError,
    add_conversion_arguments,
    conversion_overrides,
    report_error,
    resolve_device,
)

report = partial(report_error, "predict")


def add_parser(commands: argparse._SubParsersAction) -> None:
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
        help="float32 (default), or autocast to bfloat16 (about 1.6x faster on CPUs with AVX-512 BF16) or float16 "
        "(GPUs; slow on CPU)",
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
    add_conversion_arguments(predict, original_only="original checkpoints: ")
    predict.set_defaults(run=run)


def _looks_like_local_path(source: str) -> bool:
    """Whether a missing `source` is meant as a local path rather than a Hub id (`owner/name`)."""
    return (
        source.startswith(("/", ".", "~"))
        or source.count("/") > 1
        or Path(source).suffix in (".bin", ".ckpt", ".pt", ".pth", ".safetensors")
    )


def load_model(source: str, delta_base: str | None = None, dataset: str | None = None, **overrides: Any):
    """An `EoMTForUniversalSegmentation` (eval mode) from a checkpoint in any format (`checkpoints.load_checkpoint`);
    any failure is an `InputError` naming `source`."""
    from modeling_eomt import EoMTForUniversalSegmentation
    from modeling_eomt.checkpoints import load_checkpoint
    from training.inference import first_line

    if not Path(source).exists() and _looks_like_local_path(source):
        raise InputError(f"{source}: no such model file or directory")
    try:
        return load_checkpoint(EoMTForUniversalSegmentation, source, delta_base=delta_base, dataset=dataset, **overrides)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        message = first_line(error)
        raise InputError(message if source in message else f"{source}: {message}") from None


def parse_stuff_classes(text: str, num_labels: int) -> list[int]:
    """`--stuff-classes`: comma-separated class indices in `[0, num_labels)`, or `none` (every class is a thing)."""
    if text.strip().lower() == "none":
        return []
    try:
        classes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--stuff-classes {text!r}: expected comma-separated class indices or 'none'") from None
    outside = [label for label in classes if not 0 <= label < num_labels]
    if outside:
        raise InputError(f"--stuff-classes: {outside} are not class indices of this model (0 to {num_labels - 1})")
    return classes


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every image was processed, 1 when some input could not be read (the others are
    processed); an unusable model, device or option is an `InputError` (exit status 2, nothing processed)."""
    import torch

    from training.inference import find_images, load_processor, predict_files

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: exists and is not a directory")
    device = resolve_device(args.device)
    paths, problems = find_images(args.images, recursive=args.recursive)
    for problem in problems:
        report(problem)
    if not paths:
        report("no images to process")
        return 1
    model = load_model(args.model, args.delta_base, args.dataset, **conversion_overrides(args))
    processor = load_processor(args.model, model.config, args.task)
    stuff_classes = None
    if args.stuff_classes is not None:
        stuff_classes = parse_stuff_classes(args.stuff_classes, model.config.num_labels)
    predictions, failed = predict_files(
        model, processor, paths, args.out, args.task, batch_size=args.batch_size, device=device,
        dtype=getattr(torch, args.dtype), threshold=args.threshold, mask_threshold=args.mask_threshold,
        overlap_mask_area_threshold=args.overlap_threshold, stuff_classes=stuff_classes, report=report,
    )  # fmt: skip
    problems += failed
    print(f"segmented {len(paths) - len(failed)} of {len(paths)} image(s): wrote {predictions} and "
          f"{Path(args.out) / 'overlays'}/")
    if problems:
        print(f"eomt predict: {len(problems)} input(s) could not be used (see the errors above)", file=sys.stderr)
    return 1 if problems else 0
