"""What the commands share: argument groups and parsers, device resolution, metrics printing and the error lines.

Light to import (no torch at import time), so that `eomt --help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

INPUT_ERROR_STATUS = 2
"""Exit status of a command stopped by a bad input or option (`InputError`, or a `ValueError` / `OSError` about the
model, data or files): reported in one line; nothing was done, nothing was lost."""
RUN_ERROR_STATUS = 3
"""Exit status of a command that did part of its work (`RunError`): what it finished is kept and the message says
where (1 stays Python's status for a crash)."""


class InputError(Exception):
    """A problem with what the user asked for (model, device, options): reported in one line, exit status 2."""


class RunError(Exception):
    """A run that stopped part-way (training diverged, a file broke mid-run, the final evaluation failed): reported in
    one line naming what was kept (checkpoints, the final model), exit status 3."""


def report_error(command: str, message: str) -> None:
    """`eomt COMMAND: error: MESSAGE` on stderr, between progress-bar updates."""
    from tqdm.auto import tqdm

    tqdm.write(f"eomt {command}: error: {message}", file=sys.stderr)


def user_message(error: BaseException) -> str:
    """The message of `error`; for an error re-raised from a DataLoader worker, the original one (its last line)."""
    message = str(error)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


# ----------------------------------------------------------------------------------------------------------------------
# Argument groups and value parsers
# ----------------------------------------------------------------------------------------------------------------------


def _number(kind: type, low: float, inclusive: bool = True, high: float | None = None):
    """An argparse `type` reading a `kind` (int or float) in the range `[low, high]` (`(low, high]` unless
    `inclusive`); anything else is an argparse error naming the option (exit status 2)."""
    bounds = f">= {low}" if inclusive else f"> {low}"
    if high is not None:
        bounds = f"in [{low}, {high}]" if inclusive else f"in ({low}, {high}]"
    expected = f"{'an integer' if kind is int else 'a number'} {bounds}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value != value or value < low or (value == low and not inclusive) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {bounds}"  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0.0, inclusive=False)
non_negative_float = _number(float, 0.0)
probability = _number(float, 0.0, high=1.0)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """`--data` or `--dataset`, `--format`, `--task` and the options of data sets by name of `eomt train` /
    `eomt evaluate` (see `data_options`)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="data set folder (COCO panoptic/instance, ADE20K, Cityscapes or a datasets "
                        "save_to_disk folder)")  # fmt: skip
    source.add_argument("--dataset", metavar="NAME_OR_PATH", help="a datasets data set: Hub name, local folder of "
                        "data files, or save_to_disk folder (datasets.load_dataset)")  # fmt: skip
    parser.add_argument("--format", help="layout of --data: coco_panoptic, coco_instance, ade20k, cityscapes or hf_disk "
                        "(detected by default)")  # fmt: skip
    parser.add_argument("--task", choices=("panoptic", "instance", "semantic"), help="task (from the layout by default)")
    hub = parser.add_argument_group("data sets by name (--dataset, or a save_to_disk --data folder)")
    hub.add_argument("--dataset-config", help="the data set's configuration name (datasets.load_dataset)")
    hub.add_argument("--image-column", default="image", help="column of the images (default: image)")
    hub.add_argument("--annotation-column", help="column of the label maps / panoptic PNGs (default: annotation, "
                     "label, segmentation, ...: the first one present)")  # fmt: skip
    hub.add_argument("--segments-info-column", help="panoptic: the segments_info column; instance: the column of each "
                     "instance's class (default: segments_info, segments, ...)")  # fmt: skip
    hub.add_argument("--id2label", help="class names when no ClassLabel gives them: a JSON file or inline JSON, "
                     "{\"id\": \"name\"} with the data set's ids, or COCO categories [{\"id\", \"name\", "
                     "\"isthing\"}]")  # fmt: skip
    hub.add_argument("--reduce-labels", action="store_true", help="semantic maps hold class + 1, 0 unlabelled (ADE20K)")


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """`data`, `format` and `hub_options` (for `training.data.load_source`) from the arguments of
    `add_data_arguments`; `--dataset X` reads `X` with `datasets` (format `"hub"`)."""
    hub_options: dict[str, Any] = {"image_column": args.image_column}
    for name in ("annotation_column", "segments_info_column"):
        if getattr(args, name) is not None:
            hub_options[name] = getattr(args, name)
    if args.dataset_config is not None:
        hub_options["config_name"] = args.dataset_config
    if args.reduce_labels:
        hub_options["reduce_labels"] = True
    if args.id2label is not None:
        from training.data.hub import parse_id2label

        try:
            hub_options["id2label"], things = parse_id2label(args.id2label)
        except ValueError as error:
            raise InputError(str(error)) from None
        if things is not None:
            hub_options["thing_ids"] = things
    if args.dataset is not None:
        return {"data": args.dataset, "format": "hub", "hub_options": hub_options}
    return {"data": args.data, "format": args.format, "hub_options": hub_options}


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional `model` of the commands that read a checkpoint in any format (`load_model`)."""
    parser.add_argument("model", help="model directory or Hub id (this package's or transformers' format), or the "
                        "authors' original checkpoint file")  # fmt: skip


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
    from training.prediction_inputs import first_line

    if not Path(source).exists() and _looks_like_local_path(source):
        raise InputError(f"{source}: no such model file or directory")
    try:
        return load_checkpoint(EoMTForUniversalSegmentation, source, delta_base=delta_base, dataset=dataset, **overrides)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        message = first_line(error)
        raise InputError(message if source in message else f"{source}: {message}") from None


def add_conversion_arguments(parser: argparse.ArgumentParser, original_only: str = "") -> None:
    """The options of `modeling_eomt.checkpoints.load_checkpoint`: head count and input size of the authors' original
    checkpoints (help prefixed with `original_only`), class names, the base of DINOv3 delta weights."""
    parser.add_argument("--num-heads", type=positive_int,
                        help=f"{original_only}attention heads (default: width / 64, as in DINOv2/DINOv3)")  # fmt: skip
    parser.add_argument("--image-size", type=positive_int,
                        help=f"{original_only}input size (default: the stored grid; 640 for DINOv3)")  # fmt: skip
    parser.add_argument("--dataset", choices=("coco_panoptic", "coco_instance", "ade20k", "cityscapes"), help="class names")
    parser.add_argument("--delta-base", help="the DINOv3 checkpoint the authors' DINOv3 (delta) weights add to")


def conversion_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `EoMTConfig` overrides given with `--num-heads` and `--image-size` (see `add_conversion_arguments`)."""
    overrides = {"num_attention_heads": args.num_heads, "image_size": args.image_size}
    return {name: value for name, value in overrides.items() if value is not None}


def key_value(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as JSON when it parses (numbers, booleans, lists), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def resolve_device(name: str) -> torch.device:
    """`torch.device(name)` for `--device NAME`, checked to exist on this machine (an `InputError` otherwise)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: not a device (expected cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {name}: CUDA is not available (torch {torch.__version__}, no usable GPU)")
        if device.index is not None and device.index >= count:
            raise InputError(f"--device {name}: only {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: Apple MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {name}: unsupported device type {device.type!r} (expected cpu, cuda or mps)")
    return device


# ----------------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------------


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch` / `torchrun` (every process runs the command; one prints)."""
    return os.environ.get("RANK", "0") == "0"


def print_metrics(metrics: dict[str, Any]) -> None:
    """One `name: value` line per number of `metrics` (per-class tables are in the metrics files), then the panoptic
    threshold sweep (`eval_pq@t`, ...) as a table."""
    sweep: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        if "@" in name:
            metric, threshold = name.removeprefix("eval_").split("@")
            sweep.setdefault(threshold, {})[metric] = value
        elif isinstance(value, float):
            print(f"{name}: {value:.4g}")
    if sweep:
        print("class-score threshold | PQ | PQ things | PQ stuff")
        for threshold, values in sweep.items():
            row = [f"{values.get(key, float('nan')):.1f}" for key in ("pq", "pq_things", "pq_stuff")]
            print(f"{threshold:>21} | " + " | ".join(row))
