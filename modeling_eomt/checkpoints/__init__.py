"""Every checkpoint format EoMT reads or writes, in one place: each converts to this package's canonical state dict
(`EoMTForUniversalSegmentation`'s keys) through a two-way rename table, then the geometry is adapted to the model
(patch size, position grid).

- `io`: weight files (safetensors, weights-only pickles), model directories and Hub downloads;
- `renaming`: the two-way rename table; `formats`: a state dict's format from telltale keys;
- `transformers_eomt`: transformers' own EoMT (`eomt` / `eomt_dinov3`), both ways;
- `original`: the authors' original checkpoints (Lightning `.ckpt`, `_orig_mod`, DINOv3 delta weights);
- `backbones`: transformers' DINOv2 / DINOv2-with-registers / DINOv3 ViTs, and EoMT initialised from them;
- `geometry`: patch-kernel and position-embedding resampling; `loading`: strict loading and its messages.

Nothing here imports the model module: functions that build a model take its class (`EoMTForUniversalSegmentation`
or `EoMTModel`) as their first argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..configuration_eomt import EoMTConfig
from ..labels import dataset_id2label
from .backbones import (
    BACKBONE_MODEL_TYPES,
    convert_backbone_state_dict,
    eomt_config_from_backbone,
    init_from_backbone,
    load_backbone,
)
from .formats import detect_state_dict_format
from .geometry import interpolate_position_embeddings, resize_patch_kernel
from .io import PYTORCH_NAME, load_state_dict_from_directory, load_weight_file, read_config_dict, staged_directory
from .loading import HEAD_PREFIXES, ModelT, check_finite, check_loading_info, load_state_dict_with_info
from .original import config_from_original_checkpoint, convert_original_checkpoint, state_dict_from_original
from .transformers_eomt import (
    TRANSFORMERS_EOMT_MODEL_TYPES,
    config_from_transformers_eomt,
    config_to_transformers_eomt,
    load_transformers_eomt,
    save_as_transformers_eomt,
    state_dict_from_transformers_eomt,
    state_dict_to_transformers_eomt,
)

CHECKPOINT_FORMATS = ("original", "transformers", "ours")


def detect_checkpoint_format(source: str | os.PathLike) -> str:
    """`"original"` for a weight file (or a directory holding one without a `config.json`), `"transformers"` for a
    directory whose config is transformers' `eomt` / `eomt_dinov3`, `"ours"` for an `eomt_vit` one and `"hub"` for
    anything else (a Hub repo id, read by `from_pretrained` in either of the last two formats)."""
    path = Path(source)
    if path.is_file():
        return "original"
    if not path.exists():
        return "hub"
    if not (path / "config.json").is_file():
        if (path / PYTORCH_NAME).is_file():
            return "original"
        raise ValueError(f"{path}: neither a config.json nor a {PYTORCH_NAME} to convert")
    model_type = read_config_dict(path).get("model_type")
    if model_type in TRANSFORMERS_EOMT_MODEL_TYPES:
        return "transformers"
    if model_type == EoMTConfig.model_type:
        return "ours"
    hint = ""
    if model_type in BACKBONE_MODEL_TYPES:
        hint = "; a backbone initialises a new EoMT with `eomt train --backbone` (init_from_backbone)"
    raise ValueError(
        f"{path}: model_type {model_type!r} is not an EoMT checkpoint "
        f"({TRANSFORMERS_EOMT_MODEL_TYPES} or {EoMTConfig.model_type!r}){hint}"
    )


def load_checkpoint(
    model_class: type[ModelT],
    source: str | os.PathLike,
    source_format: str = "auto",
    delta_base: str | os.PathLike | None = None,
    dataset: str | None = None,
    **overrides: Any,
) -> ModelT:
    """A `model_class` (`EoMTForUniversalSegmentation`; eval mode) from an EoMT checkpoint in any supported format.

    `source_format`: `"auto"` (see `detect_checkpoint_format`), `"original"` (the authors' `network.` weights),
    `"transformers"` (transformers' `Eomt(Dinov3)ForUniversalSegmentation`) or `"ours"`. `delta_base`, `dataset` and
    `overrides` (config fields) as in `convert_original_checkpoint`."""
    if source_format == "auto":
        source_format = detect_checkpoint_format(source)
    if source_format not in CHECKPOINT_FORMATS + ("hub",):
        raise ValueError(f"source format {source_format!r} is not one of {CHECKPOINT_FORMATS}")
    if source_format == "original":
        path = Path(source) / PYTORCH_NAME if Path(source).is_dir() else Path(source)
        return convert_original_checkpoint(model_class, path, delta_base=delta_base, dataset=dataset, **overrides)
    if delta_base is not None:
        raise ValueError("delta_base applies to the authors' original checkpoints only")
    if dataset is not None:
        overrides["id2label"] = dataset_id2label(dataset)
    return model_class.from_pretrained(source, **overrides).eval()


def convert_checkpoint(
    model_class: type[ModelT],
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    source_format: str = "auto",
    target_format: str = "ours",
    delta_base: str | os.PathLike | None = None,
    dataset: str | None = None,
    **overrides: Any,
) -> ModelT:
    """Convert an EoMT checkpoint in any supported format (see `load_checkpoint`) and write it to `output_dir` with
    its image processor (the source folder's, else the square `image_size` input): `target_format` `"ours"`
    (`save_pretrained`, safetensors, with the remote code) or `"transformers"` (`save_as_transformers_eomt`).
    The files are written atomically: an interrupted conversion leaves what `output_dir` held intact. Weights holding
    NaN or infinite values are a `ValueError` naming them (nothing is written)."""
    from image_processing.image_processing_eomt import EoMTImageProcessor

    if target_format not in ("ours", "transformers"):
        raise ValueError(f"target format {target_format!r} is not 'ours' or 'transformers'")
    model = load_checkpoint(model_class, source, source_format, delta_base, dataset, **overrides)
    check_finite(model, str(source))
    processor = None
    if (Path(source) / "preprocessor_config.json").is_file():
        processor = EoMTImageProcessor.from_pretrained(source)
    with staged_directory(output_dir) as staging:
        if target_format == "transformers":
            save_as_transformers_eomt(model, staging, processor)
        else:
            model.save_pretrained(staging)
            (processor or EoMTImageProcessor(size=model.config.image_size)).save_pretrained(staging)
    return model


__all__ = [
    "CHECKPOINT_FORMATS",
    "HEAD_PREFIXES",
    "check_loading_info",
    "config_from_original_checkpoint",
    "config_from_transformers_eomt",
    "config_to_transformers_eomt",
    "convert_backbone_state_dict",
    "convert_checkpoint",
    "convert_original_checkpoint",
    "detect_checkpoint_format",
    "detect_state_dict_format",
    "eomt_config_from_backbone",
    "init_from_backbone",
    "interpolate_position_embeddings",
    "load_backbone",
    "load_checkpoint",
    "load_state_dict_from_directory",
    "load_state_dict_with_info",
    "load_transformers_eomt",
    "load_weight_file",
    "resize_patch_kernel",
    "save_as_transformers_eomt",
    "state_dict_from_original",
    "state_dict_from_transformers_eomt",
    "state_dict_to_transformers_eomt",
]
