"""Loading a canonical state dict into a model, strictly: every missing, unexpected or mismatched tensor is an error
that names it, except the segmentation heads where they are new (`reinitialize_heads`, backbone initialisation)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from .io import check_safetensors_files, read_config_dict
from .renaming import key_problems

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=torch.nn.Module)  # the model class a loader builds, taken as an argument

# Parameters created for segmentation (not part of a pre-trained ViT); `reinitialize_heads=True` lets them be
# missing from a checkpoint or of another shape (a new number of classes or queries) and initialises them afresh.
HEAD_PREFIXES = ("class_predictor.", "mask_head.", "upscale_blocks.", "eomt.query.", "query.", "attn_mask_probs")
# Keys of the segmentation model that a bare encoder (`EoMTModel`) legitimately leaves unused.
SEGMENTATION_ONLY_PREFIXES = ("class_predictor.", "mask_head.", "upscale_blocks.", "attn_mask_probs")


def is_bare_encoder(model: torch.nn.Module) -> bool:
    """Whether `model` is the encoder alone (`EoMTModel`) rather than a model holding it under `base_model_prefix`."""
    return not hasattr(model, model.base_model_prefix)


def load_state_dict_with_info(model: torch.nn.Module, state: dict[str, Tensor]) -> dict[str, Any]:
    """Load the tensors of a canonical (`EoMTForUniversalSegmentation`) state dict that fit `model` and return
    transformers-style loading info (`missing_keys`, `unexpected_keys`, `mismatched_keys`) for `check_loading_info`.
    A bare encoder takes the tensors under `eomt.`."""
    if is_bare_encoder(model):
        prefix = model.base_model_prefix + "."
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    expected = model.state_dict()
    mismatched = {
        (key, tuple(value.shape), tuple(expected[key].shape))
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    }
    skipped = {key for key, _, _ in mismatched}
    result = model.load_state_dict({key: value for key, value in state.items() if key not in skipped}, strict=False)
    return {
        "missing_keys": set(result.missing_keys),
        "unexpected_keys": set(result.unexpected_keys),
        "mismatched_keys": mismatched,
    }


def check_loading_info(model: torch.nn.Module, info: dict[str, Any], source: str, reinitialize_heads: bool) -> None:
    """Raise `ValueError` on any missing, unexpected or mismatched key, except re-initialised heads (when asked) and
    the segmentation heads a bare encoder does not use."""
    missing = sorted(info.get("missing_keys", ()))
    unexpected = sorted(info.get("unexpected_keys", ()))
    mismatched = sorted(info.get("mismatched_keys", ()))
    if reinitialize_heads:
        missing = [key for key in missing if not key.startswith(HEAD_PREFIXES)]
        mismatched = [entry for entry in mismatched if not entry[0].startswith(HEAD_PREFIXES)]
    if is_bare_encoder(model):
        unexpected = [key for key in unexpected if not key.startswith(SEGMENTATION_ONLY_PREFIXES)]
    problems = key_problems(missing, unexpected)
    if mismatched:
        shapes = (f"{key}: checkpoint {tuple(a)} vs model {tuple(b)}" for key, a, b in mismatched)
        problems.append("shape mismatches " + ", ".join(shapes))
    if info.get("error_msgs"):
        problems.extend(info["error_msgs"])
    if problems:
        keys = missing + [entry[0] for entry in mismatched]
        heads_only = bool(keys) and all(key.startswith(HEAD_PREFIXES) for key in keys)
        hint = " (pass reinitialize_heads=True to fine-tune new heads, e.g. new classes)" if heads_only else ""
        raise ValueError(f"{source}: checkpoint does not match {type(model).__name__}: " + "; ".join(problems) + hint)


def check_model_directory(source: str | os.PathLike) -> None:
    """Before loading a local model directory: a `ValueError` naming its `config.json` when that is not a JSON object,
    or a truncated or corrupt safetensors file (transformers' errors would not name them)."""
    if not Path(source).is_dir():
        return
    if (Path(source) / "config.json").is_file():
        read_config_dict(source)
    check_safetensors_files(source)


def nonfinite_tensors(state: Mapping[str, Tensor]) -> list[str]:
    """The names of the floating-point tensors of `state` (a state dict) holding a NaN or an infinity."""
    return [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def describe_nonfinite(names: list[str], source: str, total: int) -> str:
    """`source: N of M tensors hold NaN or infinite values: a, b, c, ...` (a diverged training run saves these)."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{source}: {len(names)} of {total} tensors hold NaN or infinite values ({shown})"


def warn_nonfinite(model: torch.nn.Module, source: str) -> list[str]:
    """Log a warning naming the NaN / infinite tensors of a loaded `model` (its outputs would be NaN); returns them."""
    state = model.state_dict()
    names = nonfinite_tensors(state)
    if names:
        logger.warning("%s; the model's outputs will not be usable", describe_nonfinite(names, source, len(state)))
    return names


def check_finite(model: torch.nn.Module, source: str) -> None:
    """A `ValueError` naming the tensors of `model` that hold NaN or infinite values (see `describe_nonfinite`)."""
    state = model.state_dict()
    names = nonfinite_tensors(state)
    if names:
        raise ValueError(describe_nonfinite(names, source, len(state)) + ": the checkpoint is unusable")
