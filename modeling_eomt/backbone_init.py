"""Initialise EoMT from a pre-trained transformers ViT backbone (`Dinov2Model`, `Dinov2WithRegistersModel` or
`DINOv3ViTModel` checkpoints): config mapping, weight conversion and the segmentation model with fresh heads."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PretrainedConfig

from .configuration_eomt import EoMTConfig
from .conversion import BACKBONE_MODEL_TYPES, KeyTaker, absorb_prefix_positions, load_backbone, rope_theta_of
from .modeling_eomt import EoMTForUniversalSegmentation, EoMTModel, EoMTPreTrainedModel, interpolate_position_embeddings

HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")
# Fields of our config that the backbone determines; overriding them would not match the pre-trained weights.
BACKBONE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "intermediate_size", "ffn_type",
    "hidden_act", "layer_norm_eps", "qkv_bias", "key_bias", "num_channels", "num_register_tokens",
    "position_embedding_type", "rope_theta",
)  # fmt: skip
# Parameters of `EoMTForUniversalSegmentation` that a ViT backbone does not have (relative to the segmentation model).
NEW_PARAMETER_PREFIXES = ("eomt.query.", "class_predictor.", "mask_head.", "upscale_blocks.", "attn_mask_probs")


def _config_dict(backbone_config: PretrainedConfig | dict[str, Any]) -> dict[str, Any]:
    """The backbone config as a dict, checked to be of a supported model type."""
    config = backbone_config.to_dict() if isinstance(backbone_config, PretrainedConfig) else dict(backbone_config)
    if config.get("model_type") not in BACKBONE_MODEL_TYPES:
        raise ValueError(
            f"unsupported backbone model_type {config.get('model_type')!r}: expected one of {BACKBONE_MODEL_TYPES}"
        )
    return config


def eomt_config_from_backbone(backbone_config: PretrainedConfig | dict[str, Any], **overrides: Any) -> EoMTConfig:
    """`EoMTConfig` with the architecture of a DINOv2 / DINOv3 backbone config; EoMT's own fields default to patch size
    16 and image size 640 (a different backbone patch size is resampled at conversion). `overrides` set any other
    field (`num_labels`, `id2label`, `num_queries`, `num_blocks`, `image_size`, `patch_size`, ...)."""
    source = _config_dict(backbone_config)
    fields: dict[str, Any] = {
        name: source[name]
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "hidden_act", "layer_norm_eps",
                     "layerscale_value", "num_channels", "initializer_range")
        if name in source
    }  # fmt: skip
    fields["num_register_tokens"] = source.get("num_register_tokens", 0)
    if source["model_type"] == "dinov3_vit":
        if source.get("query_bias", True) != source.get("value_bias", True):
            raise ValueError("DINOv3 backbones with query_bias != value_bias are not supported")
        if not source.get("proj_bias", True) or not source.get("mlp_bias", True):
            raise ValueError("DINOv3 backbones without projection or MLP biases are not supported")
        fields.update(
            position_embedding_type="rope",
            rope_theta=rope_theta_of(source),
            intermediate_size=source["intermediate_size"],
            ffn_type="glu" if source.get("use_gated_mlp") else "mlp",
            qkv_bias=source.get("query_bias", True),
            key_bias=source.get("key_bias", False),
            **{name: source.get(name) for name in ("pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale")},
        )
    else:
        fields.update(
            position_embedding_type="absolute",
            mlp_ratio=source.get("mlp_ratio", 4.0),
            ffn_type="swiglu" if source.get("use_swiglu_ffn") else "mlp",
            qkv_bias=source.get("qkv_bias", True),
        )
    fixed = [name for name in BACKBONE_FIELDS if name in overrides and name in fields and overrides[name] != fields[name]]
    if fixed:
        raise ValueError(f"{fixed} are fixed by the backbone ({source['model_type']}) and cannot be overridden")
    fields.update(patch_size=16, image_size=640)
    fields.update(overrides)
    return EoMTConfig(**fields)


def resize_patch_kernel(kernel: Tensor, new_size: int) -> Tensor:
    """FlexiViT's pseudo-inverse resize of a `(C_out, C_in, p, p)` patch-embedding kernel to `new_size`, so that
    `<new kernel, resize(patch)> ~= <kernel, patch>` for a bicubic (antialiased) `resize` of the patch."""
    old_size = kernel.shape[-1]
    if old_size == new_size:
        return kernel
    basis = torch.eye(old_size * old_size, dtype=torch.float32).reshape(-1, 1, old_size, old_size)
    resized = F.interpolate(basis, size=(new_size, new_size), mode="bicubic", antialias=True, align_corners=False)
    resize_matrix = resized.reshape(old_size * old_size, new_size * new_size).T  # (new_n, old_n): resize(x) = M x
    flat = kernel.float().reshape(-1, old_size * old_size)  # per (out, in) channel pair
    new_flat = flat @ torch.linalg.pinv(resize_matrix)  # w_new = pinv(M^T) w, as rows
    return new_flat.reshape(*kernel.shape[:2], new_size, new_size).to(kernel.dtype)


def _rename_legacy_dinov2_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """DINOv2 key names as saved on disk (`attention.attention.query`, `mlp.weights_in`, ...) to the in-memory ones."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.replace("attention.attention.query.", "attention.q_proj.")
        key = key.replace("attention.attention.key.", "attention.k_proj.")
        key = key.replace("attention.attention.value.", "attention.v_proj.")
        key = key.replace("attention.output.dense.", "attention.o_proj.")
        key = key.replace("mlp.weights_out.", "mlp.down_proj.")
        if ".mlp.weights_in." in key:  # fused (2H, C), gate first
            gate, up = value.chunk(2, dim=0)
            out[key.replace("mlp.weights_in.", "mlp.gate_proj.")] = gate
            out[key.replace("mlp.weights_in.", "mlp.up_proj.")] = up
            continue
        out[key] = value
    return out


def convert_backbone_state_dict(
    state_dict: dict[str, Tensor], backbone_config: PretrainedConfig | dict[str, Any], eomt_config: EoMTConfig
) -> dict[str, Tensor]:
    """`EoMTModel` weights (without `query.weight`) from a DINOv2 / DINOv2-with-registers / DINOv3 state dict.

    The class token absorbs its position embedding, the patch position embeddings are resampled bicubically to
    `eomt_config.grid_size` (as the source model would at run time) and the patch-embedding kernel is resized when
    the patch sizes differ. Raises `ValueError` naming missing or unexpected keys.
    """
    source = _config_dict(backbone_config)
    dinov3 = source["model_type"] == "dinov3_vit"
    if dinov3:  # `save_pretrained` and the Hub files say `layer.{i}`, the in-memory model `model.layer.{i}`
        state = {key.removeprefix("model.") if key.startswith("model.layer.") else key: value for key, value in state_dict.items()}
    else:
        state = _rename_legacy_dinov2_keys(state_dict)
    state.pop("embeddings.mask_token", None)
    keys = KeyTaker(state)
    take = keys.take
    out: dict[str, Tensor] = {}

    cls_token = take("embeddings.cls_token")
    registers = take("embeddings.register_tokens", optional=not source.get("num_register_tokens"))
    if registers is not None and registers.shape[1] > 0:
        out["embeddings.register_tokens"] = registers
    patch = "embeddings.patch_embeddings" if dinov3 else "embeddings.patch_embeddings.projection"
    kernel, patch_bias = take(f"{patch}.weight"), take(f"{patch}.bias")
    if kernel is not None:
        out["embeddings.patch_embeddings.weight"] = resize_patch_kernel(kernel, eomt_config.patch_size)
        out["embeddings.patch_embeddings.bias"] = patch_bias
    if not dinov3:
        positions = take("embeddings.position_embeddings")
        if positions is not None and cls_token is not None:
            side = round((positions.shape[1] - 1) ** 0.5)
            if side * side != positions.shape[1] - 1:
                raise ValueError(f"embeddings.position_embeddings of shape {tuple(positions.shape)} is not 1 + a square grid")
            cls_token, positions = absorb_prefix_positions(cls_token, positions, 1)  # our class token has no position
            # As the source model interpolates at run time: DINOv2 with registers antialiases, plain DINOv2 does not.
            antialias = source["model_type"] == "dinov2_with_registers"
            out["embeddings.position_embeddings"] = interpolate_position_embeddings(
                positions, (side, side), eomt_config.grid_size, antialias=antialias
            )
    if cls_token is not None:
        out["embeddings.cls_token"] = cls_token

    layer_prefix = "layer" if dinov3 else "encoder.layer"
    gated = source.get("use_gated_mlp") if dinov3 else source.get("use_swiglu_ffn")
    for index in range(source["num_hidden_layers"]):
        source_layer, target = f"{layer_prefix}.{index}", f"layers.{index}"
        attention = f"{source_layer}.attention"
        weights = [take(f"{attention}.{name}_proj.weight") for name in "qkv"]
        if all(weight is not None for weight in weights):
            out[f"{target}.attention.qkv.weight"] = torch.cat(weights)
        if eomt_config.qkv_bias:
            query_bias, value_bias = take(f"{attention}.q_proj.bias"), take(f"{attention}.v_proj.bias")
            key_bias = take(f"{attention}.k_proj.bias", optional=not eomt_config.key_bias)
            if eomt_config.key_bias:
                if None not in (query_bias, key_bias, value_bias):
                    out[f"{target}.attention.qkv.bias"] = torch.cat((query_bias, key_bias, value_bias))
            else:
                if key_bias is not None and key_bias.abs().max() > 0:
                    raise ValueError(f"{attention}.k_proj.bias is non-zero but the backbone config has key_bias=False")
                out[f"{target}.attention.q_bias"], out[f"{target}.attention.v_bias"] = query_bias, value_bias
        for param in ("weight", "bias"):
            out[f"{target}.attention.proj.{param}"] = take(f"{attention}.o_proj.{param}")
            for norm in ("norm1", "norm2"):
                out[f"{target}.{norm}.{param}"] = take(f"{source_layer}.{norm}.{param}")
            mlp = f"{source_layer}.mlp"
            if gated:
                gate, up = take(f"{mlp}.gate_proj.{param}"), take(f"{mlp}.up_proj.{param}")
                out[f"{target}.mlp.fc1.{param}"] = None if gate is None or up is None else torch.cat((gate, up))
                out[f"{target}.mlp.fc2.{param}"] = take(f"{mlp}.down_proj.{param}")
            elif dinov3:
                out[f"{target}.mlp.fc1.{param}"] = take(f"{mlp}.up_proj.{param}")
                out[f"{target}.mlp.fc2.{param}"] = take(f"{mlp}.down_proj.{param}")
            else:
                out[f"{target}.mlp.fc1.{param}"] = take(f"{mlp}.fc1.{param}")
                out[f"{target}.mlp.fc2.{param}"] = take(f"{mlp}.fc2.{param}")
        for scale in ("layer_scale1", "layer_scale2"):
            out[f"{target}.{scale}.lambda1"] = take(f"{source_layer}.{scale}.lambda1")
    final_norm = "norm" if dinov3 else "layernorm"
    for param in ("weight", "bias"):
        out[f"layernorm.{param}"] = take(f"{final_norm}.{param}")

    keys.check(f"{source['model_type']} state dict does not match its config")
    return {key: value for key, value in out.items() if value is not None}


def init_from_backbone(
    name_or_path: str | os.PathLike,
    model_class: type[EoMTPreTrainedModel] = EoMTForUniversalSegmentation,
    **config_overrides: Any,
) -> EoMTPreTrainedModel:
    """A new `model_class` (eval mode) whose ViT weights come from a DINOv2 / DINOv3 checkpoint and whose queries and
    heads are freshly initialised. `config_overrides` set config fields (`num_labels`, `id2label`, `image_size`, ...);
    `revision`, `cache_dir`, `token`, `local_files_only` and `force_download` go to the Hub download."""
    hub_kwargs = {key: config_overrides.pop(key) for key in HUB_KWARGS if key in config_overrides}
    state, backbone_config = load_backbone(name_or_path, **hub_kwargs)
    config = eomt_config_from_backbone(backbone_config, **config_overrides)
    weights = convert_backbone_state_dict(state, backbone_config, config)
    model = model_class(config)
    prefix = "" if isinstance(model, EoMTModel) else "eomt."
    weights = {prefix + key: value for key, value in weights.items()}
    expected = model.state_dict()
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in weights.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if mismatched:
        raise ValueError(f"{name_or_path}: shape mismatches " + ", ".join(mismatched))
    result = model.load_state_dict(weights, strict=False)
    new_prefixes = NEW_PARAMETER_PREFIXES if prefix else ("query.",)
    missing = [key for key in result.missing_keys if not key.startswith(new_prefixes)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{name_or_path}: converted weights do not fit {model_class.__name__}: "
            f"missing {sorted(missing)}, unexpected {sorted(result.unexpected_keys)}"
        )
    return model.eval()
