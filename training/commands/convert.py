"""`eomt convert`: the authors' original or transformers' EoMT checkpoints to this package's format, and back."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.arguments import InputError, add_conversion_arguments, conversion_overrides


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("convert", help="convert the authors' original or transformers' EoMT checkpoints")
    parser.add_argument("source", help="original .bin/.ckpt/.safetensors file, or a checkpoint directory or Hub id")
    parser.add_argument("output", help="output directory")
    parser.add_argument("--from", dest="source_format", default="auto", choices=("auto", "original", "transformers", "ours"))
    parser.add_argument("--to", dest="target_format", default="ours", choices=("ours", "transformers"))
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in the output directory")
    add_conversion_arguments(parser)
    parser.set_defaults(run=run)


def check_output_directory(output: str | Path, overwrite: bool, option: str) -> None:
    """An `InputError` when `output` is a file, or holds a model (a `config.json` or weights) and not `overwrite`."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"{option} {output}: exists and is not a directory")
    held = sorted(path.name for path in output.glob("*") if path.name == "config.json" or path.suffix in
                  (".safetensors", ".bin")) if output.is_dir() else []  # fmt: skip
    if held and not overwrite:
        raise InputError(f"{option} {output}: already holds a model ({', '.join(held[:3])}); pass --overwrite to "
                         "replace it, or choose another directory")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from modeling_eomt import EoMTForUniversalSegmentation
    from modeling_eomt.checkpoints import convert_checkpoint

    check_output_directory(args.output, args.overwrite, "output")
    model = convert_checkpoint(
        EoMTForUniversalSegmentation, args.source, args.output, args.source_format, args.target_format,
        args.delta_base, args.dataset, **conversion_overrides(args),
    )  # fmt: skip
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
