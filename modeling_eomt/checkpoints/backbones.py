"""transformers' DINOv2 / DINOv2-with-registers / DINOv3 ViTs: their config fields and key names (shared with
transformers' EoMT and the authors' DINOv3 checkpoints, which use the same layers), and EoMT initialised from such a
backbone with fresh queries and heads."""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor
from transformers import PretrainedConfig

from ..configuration_eomt import EoMTConfig
from .geometry import adapt_geometry
from .io import hub_download_kwargs, load_state_dict_from_directory, read_config_dict, resolve_model_files
from .loading import ModelT, check_loading_info, load_state_dict_with_info
from .renaming import RenameTable, Row

BACKBONE_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit")
ROPE_MODEL_TYPES = ("dinov3_vit", "eomt_dinov3")  # transformers' configs with DINOv3's layers and RoPE
DINOV3_AUGMENTATION_FIELDS = ("pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale")
# Fields of our config that the backbone determines; overriding them would not match the pre-trained weights.
BACKBONE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "intermediate_size", "ffn_type",
    "hidden_act", "layer_norm_eps", "qkv_bias", "key_bias", "num_channels", "num_register_tokens",
    "position_embedding_type", "rope_theta",
)  # fmt: skip
_VIT_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "hidden_act", "layer_norm_eps", "layerscale_value",
    "num_channels", "initializer_range",
)  # fmt: skip
# Names of transformers' saved files and older versions -> the in-memory ones the tables use.
_LEGACY_NAMES = (
    ("attention.attention.query.", "attention.q_proj."), ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."),
    ("mlp.weights_out.", "mlp.down_proj."),
)  # fmt: skip


def rope_theta_of(config_dict: dict[str, Any]) -> float:
    """RoPE base period of a transformers DINOv3 / EomtDinov3 config (`rope_parameters` in transformers 5)."""
    rope = config_dict.get("rope_parameters") or {}
    return rope.get("rope_theta", config_dict.get("rope_theta", 100.0))


def vit_fields(config_dict: dict[str, Any], description: str) -> dict[str, Any]:
    """`EoMTConfig` fields of the ViT described by a transformers `Dinov2Config`, `Dinov2WithRegistersConfig`,
    `DINOv3ViTConfig`, `EomtConfig` or `EomtDinov3Config` (as a dict); `description` names it in errors."""
    fields = {name: config_dict[name] for name in _VIT_FIELDS if name in config_dict}
    if config_dict.get("model_type") not in ROPE_MODEL_TYPES:
        return fields | dict(
            position_embedding_type="absolute",
            mlp_ratio=config_dict.get("mlp_ratio", 4.0),
            ffn_type="swiglu" if config_dict.get("use_swiglu_ffn") else "mlp",
            qkv_bias=config_dict.get("qkv_bias", True),
        )
    if config_dict.get("query_bias", True) != config_dict.get("value_bias", True):
        raise ValueError(f"{description} with query_bias != value_bias are not supported")
    if not config_dict.get("proj_bias", True) or not config_dict.get("mlp_bias", True):
        raise ValueError(f"{description} without projection or MLP biases are not supported")
    return fields | dict(
        position_embedding_type="rope",
        rope_theta=rope_theta_of(config_dict),
        intermediate_size=config_dict["intermediate_size"],
        ffn_type="glu" if config_dict.get("use_gated_mlp") else "mlp",
        qkv_bias=config_dict.get("query_bias", True),
        key_bias=config_dict.get("key_bias", False),
        **{name: config_dict.get(name) for name in DINOV3_AUGMENTATION_FIELDS},
    )


def backbone_config_dict(backbone_config: PretrainedConfig | dict[str, Any]) -> dict[str, Any]:
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
    source = backbone_config_dict(backbone_config)
    fields = vit_fields(source, "DINOv3 backbones")
    fields["num_register_tokens"] = source.get("num_register_tokens", 0)
    fixed = [name for name in BACKBONE_FIELDS if name in fields and overrides.get(name, fields[name]) != fields[name]]
    if fixed:
        raise ValueError(f"{fixed} are fixed by the backbone ({source['model_type']}) and cannot be overridden")
    fields.update(patch_size=16, image_size=640)
    fields.update(overrides)
    return EoMTConfig(**fields)


def load_backbone(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """State dict and config dict of a transformers DINOv2 / DINOv2-with-registers / DINOv3 ViT checkpoint: a local
    `save_pretrained` directory (safetensors or `pytorch_model.bin`, possibly sharded) or a Hub repo id."""
    directory = resolve_model_files(name_or_path, **hub_kwargs)
    try:
        config = backbone_config_dict(read_config_dict(directory))
    except ValueError as error:
        raise ValueError(f"{directory}: {error}") from error
    return load_state_dict_from_directory(directory), config


def in_memory_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers ViT / EoMT state dict with the in-memory key names of transformers 5, which the tables use: no
    `model.` prefix (DINOv3 nests its layers under it), DINOv2's saved names (`attention.attention.query`, ...) and
    the fused `mlp.weights_in` of older SwiGLU FFNs (gate first) split, no `embeddings.mask_token` (unused by
    EoMT) and no empty tensors (zero register tokens)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("model.")
        for old, new in _LEGACY_NAMES:
            key = key.replace(old, new)
        if key == "embeddings.mask_token" or value.numel() == 0:
            continue
        if ".mlp.weights_in." in key:  # (2H, C), gate first
            for name, part in zip(("gate_proj", "up_proj"), value.chunk(2)):
                out[key.replace("mlp.weights_in.", f"mlp.{name}.")] = part
        else:
            out[key] = value
    return out


def vit_layer_rows(
    layer: str, config: EoMTConfig, out_proj: str = "o_proj", mlp: tuple[str, str] = ("fc1", "fc2")
) -> list[Row]:
    """Rows of the transformers ViT layers (`Dinov2Layer`, `DINOv3ViTLayer`, `EomtLayer`) at `layer` (a template with
    `{i}`): separate q/k/v projections fused into our `qkv`, the attention output projection `out_proj`, and the
    FFN's `mlp` pair (`fc1`/`fc2` or `up_proj`/`down_proj`) or its gate, up and down projections."""
    theirs, ours = layer + ".", "eomt.layers.{i}."
    query, key, value = (f"{theirs}attention.{name}_proj" for name in "qkv")
    rows: list[Row] = [
        ((query + ".weight", key + ".weight", value + ".weight"), ours + "attention.qkv.weight"),
        (f"{theirs}attention.{out_proj}.{{p}}", ours + "attention.proj.{p}"),
        (theirs + "norm1.{p}", ours + "norm1.{p}"),
        (theirs + "layer_scale1.lambda1", ours + "layer_scale1.lambda1"),
        (theirs + "norm2.{p}", ours + "norm2.{p}"),
        (theirs + "layer_scale2.lambda1", ours + "layer_scale2.lambda1"),
    ]
    if config.qkv_bias and config.key_bias:
        rows.append(((query + ".bias", key + ".bias", value + ".bias"), ours + "attention.qkv.bias"))
    elif config.qkv_bias:  # separate query and value biases; a stored key bias must be zero
        rows += [(query + ".bias", ours + "attention.q_bias"), (value + ".bias", ours + "attention.v_bias")]
        rows.append((key + ".bias", None))
    if config.ffn_type == "mlp":
        rows.append((f"{theirs}mlp.{mlp[0]}.{{p}}", ours + "mlp.fc1.{p}"))
        rows.append((f"{theirs}mlp.{mlp[1]}.{{p}}", ours + "mlp.fc2.{p}"))
    else:  # our fused fc1 holds the gate first
        rows.append(((theirs + "mlp.gate_proj.{p}", theirs + "mlp.up_proj.{p}"), ours + "mlp.fc1.{p}"))
        rows.append((theirs + "mlp.down_proj.{p}", ours + "mlp.fc2.{p}"))
    return rows


def backbone_rows(model_type: str, config: EoMTConfig) -> list[Row]:
    """The rows of a transformers DINOv2 / DINOv2-with-registers / DINOv3 `*Model` state dict (in-memory names),
    for our encoder (no queries)."""
    if model_type == "dinov3_vit":
        rows = [
            ("embeddings.patch_embeddings.{p}", "eomt.embeddings.patch_embeddings.{p}"),
            ("norm.{p}", "eomt.layernorm.{p}"),
        ]
        rows += vit_layer_rows("layer.{i}", config, mlp=("up_proj", "down_proj"))
    else:
        rows = [
            ("embeddings.patch_embeddings.projection.{p}", "eomt.embeddings.patch_embeddings.{p}"),
            ("embeddings.position_embeddings", "eomt.embeddings.position_embeddings"),  # (1, 1 + N, C)
            ("layernorm.{p}", "eomt.layernorm.{p}"),
        ]
        rows += vit_layer_rows("encoder.layer.{i}", config)
    rows.append(("embeddings.cls_token", "eomt.embeddings.cls_token"))
    if config.num_register_tokens:
        rows.append(("embeddings.register_tokens", "eomt.embeddings.register_tokens"))
    return rows


def convert_backbone_state_dict(
    state_dict: dict[str, Tensor], backbone_config: PretrainedConfig | dict[str, Any], eomt_config: EoMTConfig
) -> dict[str, Tensor]:
    """Our weights (`eomt.` keys, without `eomt.query.weight`) from a DINOv2 / DINOv2-with-registers / DINOv3 state
    dict.

    The class token absorbs its position embedding, the patch position embeddings are resampled bicubically to
    `eomt_config.grid_size` (as the source model would at run time) and the patch-embedding kernel is resized when
    the patch sizes differ. Raises `ValueError` naming missing or unexpected keys.
    """
    model_type = backbone_config_dict(backbone_config)["model_type"]
    table = RenameTable(backbone_rows(model_type, eomt_config), eomt_config.num_hidden_layers)
    weights = table.to_ours(in_memory_names(state_dict)).check(f"{model_type} state dict does not match its config")
    # DINOv2's class token has a position embedding. Resampled as the source model interpolates at run time: DINOv2
    # with registers antialiases, plain DINOv2 does not.
    class_position = 0 if model_type == "dinov3_vit" else 1
    antialias = model_type == "dinov2_with_registers"
    return adapt_geometry(weights, eomt_config, prefix_positions=class_position, antialias=antialias)


def init_from_backbone(
    model_class: type[ModelT], name_or_path: str | os.PathLike, **config_overrides: Any
) -> ModelT:
    """A new `model_class` (`EoMTForUniversalSegmentation` or `EoMTModel`, eval mode) whose ViT weights come from a
    DINOv2 / DINOv3 checkpoint and whose queries and heads are freshly initialised. `config_overrides` set config
    fields (`num_labels`, `id2label`, `image_size`, ...); `HUB_KWARGS` (`revision`, `force_download`, ...) go to the
    Hub download."""
    state, backbone_config = load_backbone(name_or_path, **hub_download_kwargs(config_overrides, pop=True))
    config = eomt_config_from_backbone(backbone_config, **config_overrides)
    model = model_class(config)
    info = load_state_dict_with_info(model, convert_backbone_state_dict(state, backbone_config, config))
    check_loading_info(model, info, str(name_or_path), reinitialize_heads=True)  # the heads are new
    return model.eval()
