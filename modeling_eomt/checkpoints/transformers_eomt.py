"""transformers' own EoMT (`EomtForUniversalSegmentation` / `EomtDinov3ForUniversalSegmentation`, model types
`eomt` / `eomt_dinov3`, the format of the authors' Hub checkpoints), both ways: one rename table read in either
direction, and the config mapping."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from image_processing.image_processing_eomt import EoMTImageProcessor

from ..configuration_eomt import EoMTConfig, default_ffn_hidden_size
from .backbones import DINOV3_AUGMENTATION_FIELDS, in_memory_names, vit_fields, vit_layer_rows
from .formats import detect_state_dict_format
from .geometry import POSITIONS, REGISTER_TOKENS, adapt_geometry
from .io import SAFETENSORS_NAME, hub_download_kwargs, load_state_dict_from_directory, resolve_model_files
from .loading import ModelT, load_state_dict_with_info
from .renaming import RenameTable, Row

TRANSFORMERS_EOMT_MODEL_TYPES = ("eomt", "eomt_dinov3")
# Fields that mean the same in both configs.
_SHARED_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "hidden_act", "hidden_dropout_prob",
    "initializer_range", "layer_norm_eps", "image_size", "patch_size", "num_channels", "layerscale_value",
    "drop_path_rate", "attention_dropout", "num_upscale_blocks", "num_blocks", "no_object_weight", "class_weight",
    "mask_weight", "dice_weight", "train_num_points", "oversample_ratio", "importance_sample_ratio", "num_queries",
    "num_register_tokens",
)  # fmt: skip
_HEAD_ROWS: tuple[Row, ...] = (
    ("query.weight", "eomt.query.weight"), ("layernorm.{p}", "eomt.layernorm.{p}"),
    ("class_predictor.{p}", "class_predictor.{p}"), ("mask_head.fc1.{p}", "mask_head.fc1.{p}"),
    ("mask_head.fc2.{p}", "mask_head.fc2.{p}"), ("mask_head.fc3.{p}", "mask_head.fc3.{p}"),
    ("upscale_block.block.{j}.conv1.{p}", "upscale_blocks.{j}.conv_transpose.{p}"),
    ("upscale_block.block.{j}.conv2.weight", "upscale_blocks.{j}.depthwise_conv.weight"),
    ("upscale_block.block.{j}.layernorm2d.{p}", "upscale_blocks.{j}.norm.{p}"), ("attn_mask_probs", "attn_mask_probs"),
)  # fmt: skip


def is_transformers_eomt_config(config_dict: dict[str, Any]) -> bool:
    return config_dict.get("model_type") in TRANSFORMERS_EOMT_MODEL_TYPES


def config_from_transformers_eomt(config_dict: dict[str, Any], **overrides: Any) -> EoMTConfig:
    """Our config for a transformers `EomtConfig` / `EomtDinov3Config` (as a `config.json` dict)."""
    model_type = config_dict.get("model_type")
    if model_type not in TRANSFORMERS_EOMT_MODEL_TYPES:
        raise ValueError(
            f"model_type {model_type!r} is not one of transformers' EoMT types {TRANSFORMERS_EOMT_MODEL_TYPES}"
        )
    fields: dict[str, Any] = {name: config_dict[name] for name in _SHARED_FIELDS if name in config_dict}
    if "num_labels" not in overrides and "id2label" not in overrides:
        for name in ("id2label", "label2id"):
            if name in config_dict:
                fields[name] = config_dict[name]
    fields.update(vit_fields(config_dict, "EomtDinov3 checkpoints"))
    fields.update(overrides)
    return EoMTConfig(**fields)


def config_to_transformers_eomt(config: EoMTConfig) -> dict[str, Any]:
    """A `config.json` dict for transformers' `EomtConfig` (absolute positions) or `EomtDinov3Config` (RoPE)."""
    fields: dict[str, Any] = {name: getattr(config, name) for name in _SHARED_FIELDS}
    fields["id2label"] = {str(key): value for key, value in config.id2label.items()}
    fields["label2id"] = dict(config.label2id)
    if config.position_embedding_type == "absolute":
        if config.ffn_hidden_size != default_ffn_hidden_size(config.hidden_size, config.mlp_ratio, config.ffn_type):
            raise ValueError(
                f"transformers' EomtConfig derives the FFN width from mlp_ratio; intermediate_size="
                f"{config.intermediate_size} does not match mlp_ratio={config.mlp_ratio}"
            )
        if config.ffn_type == "glu":
            raise ValueError("transformers' EomtConfig has no gated MLP with a hidden_act gate (ffn_type='glu')")
        if not float(config.mlp_ratio).is_integer():
            raise ValueError(f"transformers' EomtConfig needs an integer mlp_ratio, got {config.mlp_ratio}")
        fields.update(
            model_type="eomt",
            architectures=["EomtForUniversalSegmentation"],
            mlp_ratio=int(config.mlp_ratio),
            use_swiglu_ffn=config.ffn_type == "swiglu",
        )
    else:
        if config.ffn_type == "swiglu" and config.hidden_act != "silu":
            raise ValueError("EomtDinov3's gated MLP uses hidden_act as its gate; use ffn_type='glu' for this model")
        fields.update(
            model_type="eomt_dinov3",
            architectures=["EomtDinov3ForUniversalSegmentation"],
            intermediate_size=config.ffn_hidden_size,
            rope_parameters={"rope_theta": config.rope_theta, "rope_type": "default"},
            query_bias=config.qkv_bias,
            key_bias=config.key_bias,
            value_bias=config.qkv_bias,
            proj_bias=True,
            mlp_bias=True,
            use_gated_mlp=config.ffn_type != "mlp",
            **{name: getattr(config, name) for name in DINOV3_AUGMENTATION_FIELDS},
        )
    return fields


def transformers_eomt_table(config: EoMTConfig) -> RenameTable:
    """transformers' Eomt(Dinov3)ForUniversalSegmentation keys <-> ours, for `config`."""
    if config.position_embedding_type == "rope":  # EomtDinov3: DINOv3's embeddings and layers
        rows = [("embeddings.patch_embeddings.{p}", "eomt.embeddings.patch_embeddings.{p}")]
        rows += vit_layer_rows("layers.{i}", config, mlp=("up_proj", "down_proj"))
    else:  # Eomt: DINOv2's, with patch position embeddings only (`(N, C)` there, `(1, N, C)` here)
        rows = [
            ("embeddings.patch_embeddings.projection.{p}", "eomt.embeddings.patch_embeddings.{p}"),
            ("embeddings.position_embeddings.weight", POSITIONS),
        ]
        rows += vit_layer_rows("layers.{i}", config, out_proj="out_proj")
    rows.append(("embeddings.cls_token", "eomt.embeddings.cls_token"))
    if config.num_register_tokens:
        rows.append(("embeddings.register_tokens", REGISTER_TOKENS))
    return RenameTable([*rows, *_HEAD_ROWS], config.num_hidden_layers, config.num_upscale_blocks)


def state_dict_from_transformers_eomt(state: dict[str, Tensor], config: EoMTConfig) -> dict[str, Tensor]:
    """Our `EoMTForUniversalSegmentation` state dict from a transformers Eomt / EomtDinov3 one.

    Raises `ValueError` listing the keys it does not recognise; missing ones are left to strict loading.
    """
    state = in_memory_names(state)
    state.pop("criterion.empty_weight", None)  # the loss's class weights, computed from the config
    if "embeddings.position_embeddings.weight" in state:
        state["embeddings.position_embeddings.weight"] = state["embeddings.position_embeddings.weight"][None]
    renamed = transformers_eomt_table(config).to_ours(state)
    if renamed.unexpected:
        raise ValueError(f"unrecognised keys in the transformers EoMT checkpoint: {renamed.unexpected}")
    return adapt_geometry(renamed.state, config)


def state_dict_to_transformers_eomt(state: dict[str, Tensor], config: EoMTConfig) -> dict[str, Tensor]:
    """The inverse of `state_dict_from_transformers_eomt` for one of our `EoMTForUniversalSegmentation` state dicts."""
    out = transformers_eomt_table(config).to_theirs(state).check("not convertible to transformers' EoMT format")
    hidden, dinov3 = config.hidden_size, config.position_embedding_type == "rope"
    zeros = out["embeddings.cls_token"].new_zeros(hidden)
    for index in range(config.num_hidden_layers):  # Eomt has every q/k/v bias, EomtDinov3 a key bias if configured
        for name in ("q_proj", "k_proj", "v_proj"):
            if name != "k_proj" or not dinov3 or config.key_bias:
                out.setdefault(f"layers.{index}.attention.{name}.bias", zeros)  # ours has none: zero
    if not dinov3:
        out["embeddings.position_embeddings.weight"] = out["embeddings.position_embeddings.weight"][0]
    out.setdefault("embeddings.register_tokens", zeros.new_zeros(1, 0, hidden))
    empty_weight = torch.ones(config.num_labels + 1)
    empty_weight[-1] = config.no_object_weight
    out["criterion.empty_weight"] = empty_weight
    return {key: value.contiguous() for key, value in out.items()}


def save_as_transformers_eomt(
    model: torch.nn.Module, output_dir: str | os.PathLike, processor: EoMTImageProcessor | None = None
) -> Path:
    """Write `model` (an `EoMTForUniversalSegmentation`) as a directory that transformers' own
    `EomtForUniversalSegmentation` / `EomtDinov3ForUniversalSegmentation.from_pretrained` loads, with the settings of
    `processor` (default: the square `image_size` input) as transformers' `EomtImageProcessor` config, so that
    `pipeline("image-segmentation", model=output_dir)` works with transformers alone."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = state_dict_to_transformers_eomt(model.state_dict(), model.config)
    tensors = {key: value.detach().cpu() for key, value in state.items()}
    save_file(tensors, str(output_dir / SAFETENSORS_NAME), metadata={"format": "pt"})
    config = config_to_transformers_eomt(model.config)
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    processor = processor or EoMTImageProcessor(size=model.config.image_size)
    processor_config = processor.to_transformers_eomt_dict()
    (output_dir / "preprocessor_config.json").write_text(json.dumps(processor_config, indent=2, sort_keys=True))
    return output_dir


def transformers_eomt_config_dict(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> dict[str, Any] | None:
    """The `config.json` of a transformers EoMT checkpoint at `name_or_path`, or None for any other checkpoint."""
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(str(name_or_path), **hub_kwargs)
    except OSError:
        return None  # transformers' own loader reports the problem
    return config_dict if is_transformers_eomt_config(config_dict) else None


def load_transformers_eomt(
    model_class: type[ModelT], name_or_path: str | os.PathLike, **kwargs: Any
) -> tuple[ModelT, dict[str, Any]] | None:
    """`model_class` (eval mode) built from a checkpoint saved by transformers' `Eomt(Dinov3)ForUniversalSegmentation`
    and its loading info, to be checked with `check_loading_info`; None when `name_or_path` holds no such checkpoint.
    `kwargs` as in `from_pretrained`: Hub arguments, `dtype`, `device_map`, `attn_implementation`, `config`, and
    config fields to override."""
    config_dict = transformers_eomt_config_dict(name_or_path, **hub_download_kwargs(kwargs))
    if config_dict is None:
        return None
    directory = resolve_model_files(name_or_path, **hub_download_kwargs(kwargs, pop=True))
    dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
    device = kwargs.pop("device_map", None)
    attn_implementation = kwargs.pop("attn_implementation", None)
    kwargs.pop("ignore_mismatched_sizes", None)
    try:
        config = kwargs.pop("config", None) or config_from_transformers_eomt(config_dict, **kwargs)
    except ValueError as error:  # a field of the wrong type or range
        raise ValueError(f"{directory / 'config.json'}: {error}") from None
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    state = load_state_dict_from_directory(directory)
    if detect_state_dict_format(state) == "original":
        raise ValueError(
            f"{directory}: the weights are the authors' original ones (`network.` keys), not transformers' EoMT "
            "format; convert them with `eomt convert` (modeling_eomt.checkpoints.convert_original_checkpoint)"
        )
    model = model_class(config)  # freshly initialised; loading below overwrites every matching tensor
    info = load_state_dict_with_info(model, state_dict_from_transformers_eomt(state, config))
    if isinstance(dtype, str):
        dtype = None if dtype == "auto" else getattr(torch, dtype)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval(), info
