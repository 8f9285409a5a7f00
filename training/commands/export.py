"""`eomt export`: the mask-free inference graph as an ONNX model or a torch.export program (`modeling_eomt.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.arguments import InputError, add_model_argument, load_model


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="export the mask-free model to ONNX or torch.export",
        description="Export a mask-free EoMT model (pixel_values -> class_queries_logits, masks_queries_logits) as an "
        "ONNX model (onnxruntime and other runtimes) or a torch.export program (torch.export.load). The exported "
        "outputs are checked against the model on a random input.",
    )
    add_model_argument(parser)
    parser.add_argument("output", type=Path, help="file to write, e.g. model.onnx or model.pt2")
    parser.add_argument("--format", choices=("onnx", "torch"),
                        help="onnx or torch (default: from the output's suffix, .pt2 for torch; else onnx)")  # fmt: skip
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"),
        help="export for this input size only (multiples of the patch size); default: any height and width",
    )  # fmt: skip
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: --batch-size images)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per call without --dynamic-batch (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from modeling_eomt.export import FORMATS, check_exportable, check_image_size, export_model

    suffixes = {suffix: name for name, suffix in FORMATS.items()}
    export_format = args.format or suffixes.get(args.output.suffix, "onnx")
    if args.output.exists() and not args.overwrite:
        raise InputError(f"{args.output} exists; pass --overwrite to replace it")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = load_model(args.model)
    try:
        check_exportable(model)
    except ValueError as error:
        raise InputError(f"{args.model}: {error}") from None
    if args.image_size is not None:
        try:
            check_image_size(args.image_size, model.config.patch_size)
        except ValueError as error:
            raise InputError(f"--image-size: {error}") from None
    path = export_model(model, args.output, export_format, args.image_size, args.dynamic_batch, args.batch_size)

    config = model.config
    height, width = args.image_size or (config.grid_size[0] * config.patch_size, config.grid_size[1] * config.patch_size)
    batch = 2 if args.dynamic_batch else args.batch_size
    pixel_values = torch.randn(batch, config.num_channels, height, width)
    difference = max_difference(model, path, export_format, pixel_values)
    batch_text = "any batch" if args.dynamic_batch else f"batch {args.batch_size}"
    size_text = f"{height}x{width}" if args.image_size else f"any height and width (multiples of {config.patch_size})"
    print(f"wrote {path} ({export_format}; {batch_text}, {size_text}); the exported outputs differ from the model's by "
          f"at most {difference:.1e} on a random {batch}x{height}x{width} input")  # fmt: skip
    return 0


def max_difference(model, path: Path, export_format: str, pixel_values) -> float:
    """Largest absolute difference between the model's class and mask logits and those of the exported file."""
    import torch

    from modeling_eomt.export import logits_output, onnxruntime_session, run_onnx

    with torch.inference_mode():
        expected = model(pixel_values)
        if export_format == "onnx":
            actual = run_onnx(onnxruntime_session(path), pixel_values)
        else:
            actual = logits_output(*torch.export.load(str(path)).module()(pixel_values))
    return max(
        (actual.class_queries_logits - expected.class_queries_logits).abs().max().item(),
        (actual.masks_queries_logits - expected.masks_queries_logits).abs().max().item(),
    )
