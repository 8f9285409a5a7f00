"""Every foreign EoMT weight format, to (and where useful from) this package's format:

- transformers' own EoMT (`model_type` "eomt" / "eomt_dinov3", the format of the authors' Hub checkpoints), both ways;
- the authors' original training checkpoints (Lightning `.ckpt` / `pytorch_model.bin`, timm-style keys under
  `network.`), with the architecture inferred from the tensors;
- the safe weight-file reading every loader shares (safetensors, or `torch.load(weights_only=True)`), and the
  strict-loading checks. Initialisation from DINOv2 / DINOv3 backbones lives in `backbone_init.py`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from image_processing.transforms import IMAGENET_MEAN, IMAGENET_STD  # what the image processor normalises with

from .configuration_eomt import EoMTConfig, default_ffn_hidden_size
from .modeling_eomt import EoMTForUniversalSegmentation, interpolate_position_embeddings

TRANSFORMERS_EOMT_MODEL_TYPES = ("eomt", "eomt_dinov3")
BACKBONE_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit")
SAFETENSORS_NAME, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PYTORCH_NAME, PYTORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"

# Fields that mean the same in both configs.
_SHARED_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "hidden_act", "hidden_dropout_prob",
    "initializer_range", "layer_norm_eps", "image_size", "patch_size", "num_channels", "layerscale_value",
    "drop_path_rate", "attention_dropout", "num_upscale_blocks", "num_blocks", "no_object_weight", "class_weight",
    "mask_weight", "dice_weight", "train_num_points", "oversample_ratio", "importance_sample_ratio", "num_queries",
    "num_register_tokens",
)  # fmt: skip
_DINOV3_FIELDS = ("pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale")


# ----------------------------------------------------------------------------------------------------------------------
# Reading weight files
# ----------------------------------------------------------------------------------------------------------------------


def load_weight_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of one weight file: safetensors, or a legacy pickle read with `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path}: could not be read as a weights-only PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Only tensors and plain containers are accepted."
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning checkpoints
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict), got {type(state).__name__}")
    return state


def load_state_dict_from_directory(directory: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of a `save_pretrained` directory: (sharded) safetensors first, else (sharded) pytorch_model.bin."""
    directory = Path(directory)
    for index_name in (SAFETENSORS_INDEX, PYTORCH_INDEX):
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            state: dict[str, Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_weight_file(directory / shard))
            return state
    for name in (SAFETENSORS_NAME, PYTORCH_NAME):
        if (directory / name).is_file():
            return load_weight_file(directory / name)
    raise FileNotFoundError(f"{directory}: no {SAFETENSORS_NAME}, {PYTORCH_NAME} or sharded index found")


def resolve_model_files(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """A local model directory as is, or a Hub repo id downloaded to the local cache: `config.json` and the
    safetensors weights, or the `pytorch_model*.bin` weights when the repo has no safetensors."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path}: expected a model directory (config.json + weights), got a file")
    from huggingface_hub import snapshot_download

    try:
        directory = Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors"], **hub_kwargs))
        if not any(directory.glob("*.safetensors")):
            directory = Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.bin"], **hub_kwargs))
    except Exception as error:
        raise OSError(f"{name_or_path}: not a local directory and could not be fetched from the Hub ({error})") from error
    return directory


def read_config_dict(directory: str | os.PathLike) -> dict[str, Any]:
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json")
    return json.loads(config_path.read_text())


def load_backbone(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """State dict and config dict of a transformers DINOv2 / DINOv2-with-registers / DINOv3 ViT checkpoint: a local
    `save_pretrained` directory (safetensors or `pytorch_model.bin`, possibly sharded) or a Hub repo id."""
    directory = resolve_model_files(name_or_path, **hub_kwargs)
    config = read_config_dict(directory)
    if config.get("model_type") not in BACKBONE_MODEL_TYPES:
        raise ValueError(
            f"{directory}: unsupported backbone model_type {config.get('model_type')!r}: "
            f"expected one of {BACKBONE_MODEL_TYPES}"
        )
    return load_state_dict_from_directory(directory), config


class KeyTaker:
    """Takes tensors out of a copy of a state dict by name: keys asked for but absent are `missing`, keys never asked
    for stay in `state`; `check` raises one `ValueError` naming both."""

    def __init__(self, state: dict[str, Tensor]) -> None:
        self.state = dict(state)
        self.missing: list[str] = []

    def take(self, key: str, optional: bool = False) -> Tensor | None:
        if key not in self.state and not optional:
            self.missing.append(key)
        return self.state.pop(key, None)

    def check(self, description: str) -> None:
        problems = []
        if self.missing:
            problems.append(f"missing keys {sorted(self.missing)}")
        if self.state:
            problems.append(f"unexpected keys {sorted(self.state)}")
        if problems:
            raise ValueError(f"{description}: " + "; ".join(problems))


def rope_theta_of(config_dict: dict[str, Any]) -> float:
    """RoPE base period of a transformers DINOv3 / EomtDinov3 config (`rope_parameters` in transformers 5)."""
    rope = config_dict.get("rope_parameters") or {}
    return rope.get("rope_theta", config_dict.get("rope_theta", 100.0))


# ----------------------------------------------------------------------------------------------------------------------
# transformers' Eomt / EomtDinov3 -> ours
# ----------------------------------------------------------------------------------------------------------------------


def is_transformers_eomt_config(config_dict: dict[str, Any]) -> bool:
    return config_dict.get("model_type") in TRANSFORMERS_EOMT_MODEL_TYPES


def config_from_transformers_eomt(config_dict: dict[str, Any], **overrides: Any) -> EoMTConfig:
    """Our config for a transformers `EomtConfig` / `EomtDinov3Config` (as a `config.json` dict)."""
    model_type = config_dict.get("model_type")
    if model_type not in TRANSFORMERS_EOMT_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not one of transformers' EoMT types {TRANSFORMERS_EOMT_MODEL_TYPES}")
    fields: dict[str, Any] = {name: config_dict[name] for name in _SHARED_FIELDS if name in config_dict}
    if "num_labels" not in overrides and "id2label" not in overrides:
        for name in ("id2label", "label2id"):
            if name in config_dict:
                fields[name] = config_dict[name]
    if model_type == "eomt":
        fields["position_embedding_type"] = "absolute"
        fields["mlp_ratio"] = config_dict.get("mlp_ratio", 4)
        fields["ffn_type"] = "swiglu" if config_dict.get("use_swiglu_ffn") else "mlp"
    else:
        if config_dict.get("query_bias", True) != config_dict.get("value_bias", True):
            raise ValueError("EomtDinov3 checkpoints with query_bias != value_bias are not supported")
        if not config_dict.get("proj_bias", True) or not config_dict.get("mlp_bias", True):
            raise ValueError("EomtDinov3 checkpoints without projection or MLP biases are not supported")
        fields["position_embedding_type"] = "rope"
        fields["rope_theta"] = rope_theta_of(config_dict)
        fields["intermediate_size"] = config_dict["intermediate_size"]
        fields["ffn_type"] = "glu" if config_dict.get("use_gated_mlp") else "mlp"
        fields["qkv_bias"] = config_dict.get("query_bias", True)
        fields["key_bias"] = config_dict.get("key_bias", False)
        fields.update({name: config_dict.get(name) for name in _DINOV3_FIELDS})
    fields.update(overrides)
    return EoMTConfig(**fields)


def fuse_qkv(state: dict[str, Tensor], source: str, target: str, names: tuple[str, str, str], key_bias: bool) -> dict[str, Tensor]:
    """Pop separate q/k/v projections `{source}.{name}.{weight,bias}` from `state` and return our fused
    `{target}.qkv.weight` (+ `{target}.qkv.bias`, or `{target}.q_bias` / `{target}.v_bias` without a key bias)."""
    query, key, value = names
    out = {f"{target}.qkv.weight": torch.cat([state.pop(f"{source}.{name}.weight") for name in names])}
    biases = [state.pop(f"{source}.{name}.bias", None) for name in names]
    if key_bias:
        out[f"{target}.qkv.bias"] = torch.cat(biases)
    else:
        if biases[1] is not None and biases[1].abs().max() > 0:
            raise ValueError(f"{source}.{key}.bias is non-zero but the config has key_bias=False")
        out[f"{target}.q_bias"], out[f"{target}.v_bias"] = biases[0], biases[2]
    return out


def state_dict_from_transformers_eomt(state: dict[str, Tensor], config: EoMTConfig) -> dict[str, Tensor]:
    """Our `EoMTForUniversalSegmentation` state dict from a transformers Eomt / EomtDinov3 one.

    Raises `ValueError` listing the keys it does not recognise.
    """
    state = {re.sub(r"^model\.", "", key): value for key, value in state.items()}
    state.pop("criterion.empty_weight", None)
    state.pop("embeddings.mask_token", None)
    out: dict[str, Tensor] = {}

    def move(source: str, target: str) -> None:
        if source in state:
            out[target] = state.pop(source)

    embeddings = "eomt.embeddings"
    move("embeddings.cls_token", f"{embeddings}.cls_token")
    registers = state.pop("embeddings.register_tokens", None)
    if registers is not None and registers.shape[1] > 0:
        out[f"{embeddings}.register_tokens"] = registers
    for param in ("weight", "bias"):
        move(f"embeddings.patch_embeddings.projection.{param}", f"{embeddings}.patch_embeddings.{param}")
        move(f"embeddings.patch_embeddings.{param}", f"{embeddings}.patch_embeddings.{param}")
    if "embeddings.position_embeddings.weight" in state:
        out[f"{embeddings}.position_embeddings"] = state.pop("embeddings.position_embeddings.weight")[None]
    move("query.weight", "eomt.query.weight")

    for index in range(config.num_hidden_layers):
        source, target = f"layers.{index}", f"eomt.layers.{index}"
        attention = f"{source}.attention"
        if f"{attention}.q_proj.weight" in state:
            out.update(fuse_qkv(state, attention, f"{target}.attention", ("q_proj", "k_proj", "v_proj"), config.key_bias))
        for param in ("weight", "bias"):
            move(f"{attention}.out_proj.{param}", f"{target}.attention.proj.{param}")
            move(f"{attention}.o_proj.{param}", f"{target}.attention.proj.{param}")
            for norm in ("norm1", "norm2"):
                move(f"{source}.{norm}.{param}", f"{target}.{norm}.{param}")
            if config.ffn_type != "mlp":
                if f"{source}.mlp.gate_proj.{param}" in state:
                    gate = state.pop(f"{source}.mlp.gate_proj.{param}")
                    out[f"{target}.mlp.fc1.{param}"] = torch.cat((gate, state.pop(f"{source}.mlp.up_proj.{param}")))
                move(f"{source}.mlp.weights_in.{param}", f"{target}.mlp.fc1.{param}")  # transformers 4.x, gate first
                move(f"{source}.mlp.down_proj.{param}", f"{target}.mlp.fc2.{param}")
                move(f"{source}.mlp.weights_out.{param}", f"{target}.mlp.fc2.{param}")
            else:
                move(f"{source}.mlp.fc1.{param}", f"{target}.mlp.fc1.{param}")
                move(f"{source}.mlp.up_proj.{param}", f"{target}.mlp.fc1.{param}")
                move(f"{source}.mlp.fc2.{param}", f"{target}.mlp.fc2.{param}")
                move(f"{source}.mlp.down_proj.{param}", f"{target}.mlp.fc2.{param}")
        for scale in ("layer_scale1", "layer_scale2"):
            move(f"{source}.{scale}.lambda1", f"{target}.{scale}.lambda1")

    for param in ("weight", "bias"):
        move(f"layernorm.{param}", f"eomt.layernorm.{param}")
        move(f"class_predictor.{param}", f"class_predictor.{param}")
        for fc in ("fc1", "fc2", "fc3"):
            move(f"mask_head.{fc}.{param}", f"mask_head.{fc}.{param}")
        for index in range(config.num_upscale_blocks):
            source, target = f"upscale_block.block.{index}", f"upscale_blocks.{index}"
            move(f"{source}.conv1.{param}", f"{target}.conv_transpose.{param}")
            move(f"{source}.conv2.{param}", f"{target}.depthwise_conv.{param}")
            move(f"{source}.layernorm2d.{param}", f"{target}.norm.{param}")
    move("attn_mask_probs", "attn_mask_probs")
    if state:
        raise ValueError(f"unrecognised keys in the transformers EoMT checkpoint: {sorted(state)}")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# ours -> transformers' Eomt / EomtDinov3
# ----------------------------------------------------------------------------------------------------------------------


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
            **{name: getattr(config, name) for name in _DINOV3_FIELDS},
        )
    return fields


def state_dict_to_transformers_eomt(state: dict[str, Tensor], config: EoMTConfig) -> dict[str, Tensor]:
    """The inverse of `state_dict_from_transformers_eomt` for one of our `EoMTForUniversalSegmentation` state dicts."""
    state = dict(state)
    dinov3 = config.position_embedding_type == "rope"
    hidden = config.hidden_size
    out: dict[str, Tensor] = {}
    out["embeddings.cls_token"] = state.pop("eomt.embeddings.cls_token")
    out["embeddings.register_tokens"] = state.pop(
        "eomt.embeddings.register_tokens", out["embeddings.cls_token"].new_zeros(1, 0, hidden)
    )
    patch = "embeddings.patch_embeddings" if dinov3 else "embeddings.patch_embeddings.projection"
    for param in ("weight", "bias"):
        out[f"{patch}.{param}"] = state.pop(f"eomt.embeddings.patch_embeddings.{param}")
    if not dinov3:
        out["embeddings.position_embeddings.weight"] = state.pop("eomt.embeddings.position_embeddings")[0]
    out["query.weight"] = state.pop("eomt.query.weight")
    out_proj = "o_proj" if dinov3 else "out_proj"
    for index in range(config.num_hidden_layers):
        source, target = f"eomt.layers.{index}", f"layers.{index}"
        qkv_weight = state.pop(f"{source}.attention.qkv.weight")
        if f"{source}.attention.qkv.bias" in state:
            qkv_bias = state.pop(f"{source}.attention.qkv.bias").chunk(3)
        else:
            zeros = qkv_weight.new_zeros(hidden)
            qkv_bias = (state.pop(f"{source}.attention.q_bias", zeros), zeros, state.pop(f"{source}.attention.v_bias", zeros))
        for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), qkv_weight.chunk(3), qkv_bias):
            out[f"{target}.attention.{name}.weight"] = weight
            if not dinov3 or name != "k_proj" or config.key_bias:
                out[f"{target}.attention.{name}.bias"] = bias
        for param in ("weight", "bias"):
            out[f"{target}.attention.{out_proj}.{param}"] = state.pop(f"{source}.attention.proj.{param}")
            for norm in ("norm1", "norm2"):
                out[f"{target}.{norm}.{param}"] = state.pop(f"{source}.{norm}.{param}")
            fc1, fc2 = state.pop(f"{source}.mlp.fc1.{param}"), state.pop(f"{source}.mlp.fc2.{param}")
            if config.ffn_type != "mlp":
                out[f"{target}.mlp.gate_proj.{param}"], out[f"{target}.mlp.up_proj.{param}"] = fc1.chunk(2)
                out[f"{target}.mlp.down_proj.{param}"] = fc2
            elif dinov3:
                out[f"{target}.mlp.up_proj.{param}"], out[f"{target}.mlp.down_proj.{param}"] = fc1, fc2
            else:
                out[f"{target}.mlp.fc1.{param}"], out[f"{target}.mlp.fc2.{param}"] = fc1, fc2
        for scale in ("layer_scale1", "layer_scale2"):
            out[f"{target}.{scale}.lambda1"] = state.pop(f"{source}.{scale}.lambda1")
    for param in ("weight", "bias"):
        out[f"layernorm.{param}"] = state.pop(f"eomt.layernorm.{param}")
        out[f"class_predictor.{param}"] = state.pop(f"class_predictor.{param}")
        for fc in ("fc1", "fc2", "fc3"):
            out[f"mask_head.{fc}.{param}"] = state.pop(f"mask_head.{fc}.{param}")
    for index in range(config.num_upscale_blocks):
        source, target = f"upscale_blocks.{index}", f"upscale_block.block.{index}"
        out[f"{target}.conv1.weight"] = state.pop(f"{source}.conv_transpose.weight")
        out[f"{target}.conv1.bias"] = state.pop(f"{source}.conv_transpose.bias")
        out[f"{target}.conv2.weight"] = state.pop(f"{source}.depthwise_conv.weight")
        out[f"{target}.layernorm2d.weight"] = state.pop(f"{source}.norm.weight")
        out[f"{target}.layernorm2d.bias"] = state.pop(f"{source}.norm.bias")
    out["attn_mask_probs"] = state.pop("attn_mask_probs")
    empty_weight = torch.ones(config.num_labels + 1)
    empty_weight[-1] = config.no_object_weight
    out["criterion.empty_weight"] = empty_weight
    if state:
        raise ValueError(f"keys without a transformers EoMT counterpart: {sorted(state)}")
    return {key: value.contiguous() for key, value in out.items()}


def save_as_transformers_eomt(model: torch.nn.Module, output_dir: str | os.PathLike) -> Path:
    """Write `model` (an `EoMTForUniversalSegmentation`) as a directory that transformers' own
    `EomtForUniversalSegmentation` / `EomtDinov3ForUniversalSegmentation.from_pretrained` loads."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = state_dict_to_transformers_eomt(model.state_dict(), model.config)
    save_file({key: value.detach().cpu() for key, value in state.items()}, str(output_dir / SAFETENSORS_NAME), metadata={"format": "pt"})
    (output_dir / "config.json").write_text(json.dumps(config_to_transformers_eomt(model.config), indent=2, sort_keys=True))
    return output_dir


# ----------------------------------------------------------------------------------------------------------------------
# The authors' original checkpoints (tue-mps/eomt: Lightning `.ckpt` / `pytorch_model.bin`, keys under `network.`)
# ----------------------------------------------------------------------------------------------------------------------

ORIGINAL_BACKBONE = "network.encoder.backbone."
DINO_HEAD_DIM = 64  # every DINOv2 / DINOv3 size has 64-dimensional heads
TIMM_LAYER_NORM_EPS = 1e-6  # timm's DINOv2 ViTs
DINOV3_LAYER_NORM_EPS = 1e-5  # transformers' DINOv3 ViTs
DINOV3_POS_EMBED_RESCALE = 2.0  # DINOv3's training-time RoPE rescaling (the DINOv3 Hub configs)
# Fields the checkpoint's tensors determine; an override that disagrees could not load the weights.
ORIGINAL_TENSOR_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_channels", "patch_size", "num_register_tokens", "qkv_bias", "key_bias",
    "position_embedding_type", "num_queries", "num_blocks", "num_upscale_blocks", "num_labels",
)  # fmt: skip

# One-to-one renames, original -> ours; "{p}" stands for both "weight" and "bias".
_TIMM_BLOCK_KEYS = (  # timm `Block` (DINOv2): `SwiGLUPacked` keeps the gate first in `mlp.fc1`, as `EoMTGatedFFN` does
    ("norm1.{p}", "norm1.{p}"), ("attn.qkv.{p}", "attention.qkv.{p}"), ("attn.proj.{p}", "attention.proj.{p}"),
    ("ls1.gamma", "layer_scale1.lambda1"), ("norm2.{p}", "norm2.{p}"), ("mlp.fc1.{p}", "mlp.fc1.{p}"),
    ("mlp.fc2.{p}", "mlp.fc2.{p}"), ("ls2.gamma", "layer_scale2.lambda1"),
)  # fmt: skip
_DINOV3_BLOCK_KEYS = (  # transformers `DINOv3ViTLayer`; q/k/v and a gated MLP's gate/up are fused separately
    ("norm1.{p}", "norm1.{p}"), ("attention.o_proj.{p}", "attention.proj.{p}"),
    ("layer_scale1.lambda1", "layer_scale1.lambda1"), ("norm2.{p}", "norm2.{p}"), ("mlp.down_proj.{p}", "mlp.fc2.{p}"),
    ("layer_scale2.lambda1", "layer_scale2.lambda1"),
)  # fmt: skip
_DINOV3_EMBEDDING_KEYS = (  # transformers `DINOv3ViTEmbeddings`, renamed `patch_embed` (registers handled apart)
    ("patch_embed.patch_embeddings.{p}", "patch_embeddings.{p}"), ("patch_embed.cls_token", "cls_token"),
)  # fmt: skip
_HEAD_KEYS = (
    ("network.q.weight", "eomt.query.weight"), ("network.class_head.{p}", "class_predictor.{p}"),
    ("network.mask_head.0.{p}", "mask_head.fc1.{p}"), ("network.mask_head.2.{p}", "mask_head.fc2.{p}"),
    ("network.mask_head.4.{p}", "mask_head.fc3.{p}"), ("network.attn_mask_probs", "attn_mask_probs"),
    (ORIGINAL_BACKBONE + "norm.{p}", "eomt.layernorm.{p}"),
)  # fmt: skip
_UPSCALE_KEYS = (  # `ScaleBlock` -> `EoMTUpscaleBlock`
    ("conv1.{p}", "conv_transpose.{p}"), ("conv2.weight", "depthwise_conv.weight"), ("norm.{p}", "norm.{p}"),
)  # fmt: skip


def _expand(pairs: tuple[tuple[str, str], ...], source: str = "", target: str = "") -> list[tuple[str, str]]:
    """`(source + original, target + ours)` key pairs with "{p}" expanded to weight and bias."""
    return [
        (source + original.format(p=param), target + ours.format(p=param))
        for original, ours in pairs
        for param in (("weight", "bias") if "{p}" in original else ("",))
    ]


def normalise_original_state(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The `network.` tensors of an original checkpoint, without `torch.compile`'s `_orig_mod.` and the loss buffer
    (`criterion.empty_weight`). Raises `ValueError` when the file is not an original EoMT checkpoint."""
    state = {key.replace("._orig_mod", "").replace("_orig_mod.", ""): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith("criterion.")}
    foreign = sorted(key for key in state if not key.startswith("network."))
    if foreign:
        hint = "" if any(key.startswith("network.") for key in state) else " (not an original EoMT checkpoint?)"
        raise ValueError(f"{source}: keys outside `network.`: {foreign[:8]}{' ...' if len(foreign) > 8 else ''}{hint}")
    return state


def original_backbone_flavour(state: dict[str, Tensor]) -> str:
    """`"dinov2"` for a timm `VisionTransformer` backbone, `"dinov3"` for a transformers `DINOv3ViTModel` one."""
    if ORIGINAL_BACKBONE + "patch_embed.proj.weight" in state:
        return "dinov2"
    if ORIGINAL_BACKBONE + "patch_embed.patch_embeddings.weight" in state:
        return "dinov3"
    raise ValueError(
        f"no patch embedding ({ORIGINAL_BACKBONE}patch_embed.proj.weight for DINOv2 or "
        f"{ORIGINAL_BACKBONE}patch_embed.patch_embeddings.weight for DINOv3): not an original EoMT checkpoint"
    )


def _require(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise ValueError(f"missing key {key!r}, needed to infer the architecture")
    return state[key]


def _count_indexed(state: dict[str, Tensor], prefix: str) -> int:
    """Number of modules `{prefix}{i}.` in `state`; their indices must be 0..n-1."""
    indices = {int(match.group(1)) for key in state if (match := re.match(re.escape(prefix) + r"(\d+)\.", key))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{prefix}{{i}} indices are not contiguous from 0: {sorted(indices)}")
    return len(indices)


def timm_position_layout(num_positions: int, num_registers: int) -> tuple[int, int]:
    """(side of the square patch grid, number of leading prefix-token positions) of a timm `pos_embed` with
    `num_positions` rows: none (`no_embed_class`, DINOv2 with registers), the class token's (plain DINOv2), or the
    class and register tokens'."""
    candidates = (0, 1, 1 + num_registers) if num_registers else (1, 0)
    for prefix in candidates:
        side = math.isqrt(max(num_positions - prefix, 0))
        if side > 0 and side * side == num_positions - prefix:
            return side, prefix
    raise ValueError(
        f"pos_embed has {num_positions} positions: not a square patch grid plus {', '.join(map(str, candidates))} "
        "prefix positions"
    )


def absorb_prefix_positions(
    prefix_tokens: Tensor, positions: Tensor, num_prefix_positions: int
) -> tuple[Tensor, Tensor]:
    """Add the first P position embeddings of `positions` `(1, P + N, C)` to the first P tokens of `prefix_tokens`
    `(1, K, C)` (EoMT's class and register tokens carry no position embedding); returns those tokens and the N patch
    position embeddings."""
    num = num_prefix_positions
    if num:
        prefix_tokens = torch.cat((prefix_tokens[:, :num] + positions[:, :num], prefix_tokens[:, num:]), dim=1)
    return prefix_tokens, positions[:, num:]


def config_from_original_checkpoint(
    state: dict[str, Tensor], dataset: str | None = None, **overrides: Any
) -> EoMTConfig:
    """`EoMTConfig` inferred from the tensors of an original checkpoint (normalised by `normalise_original_state`).

    Width, depth, registers, patch size, stored grid (`image_size` = grid * patch), queries, classes, `num_blocks`
    (from `attn_mask_probs`), upscale blocks, MLP vs SwiGLU, DINOv2 vs DINOv3 and the key bias come from the tensors;
    heads default to width / 64 as in every DINOv2 / DINOv3 size. `overrides` set any other field
    (`num_attention_heads`, `image_size`, `id2label`, ...); `dataset` picks an `id2label` preset
    (`modeling_eomt.labels.DATASET_CLASSES`)."""
    from .labels import dataset_id2label

    known = set(inspect.signature(EoMTConfig.__init__).parameters) | {"id2label", "label2id", "num_labels"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown EoMTConfig fields {unknown}")
    backbone = ORIGINAL_BACKBONE
    flavour = original_backbone_flavour(state)
    query = _require(state, "network.q.weight")  # (Q, C)
    hidden_size = query.shape[1]
    fields: dict[str, Any] = dict(
        hidden_size=hidden_size,
        num_hidden_layers=_count_indexed(state, backbone + "blocks."),
        num_queries=query.shape[0],
        num_labels=_require(state, "network.class_head.weight").shape[0] - 1,
        num_blocks=_require(state, "network.attn_mask_probs").numel(),
        num_upscale_blocks=_count_indexed(state, "network.upscale."),
        hidden_act="gelu",  # the mask head and upscale blocks (and every MLP FFN) use exact GELU
    )
    if flavour == "dinov2":
        kernel = _require(state, backbone + "patch_embed.proj.weight")
        registers = state.get(backbone + "reg_token")
        fc1 = _require(state, backbone + "blocks.0.mlp.fc1.weight")
        ffn_width = _require(state, backbone + "blocks.0.mlp.fc2.weight").shape[1]
        gated = fc1.shape[0] == 2 * ffn_width
        fields.update(qkv_bias=backbone + "blocks.0.attn.qkv.bias" in state, key_bias=True)
        fields.update(position_embedding_type="absolute", layer_norm_eps=TIMM_LAYER_NORM_EPS)
    else:
        kernel = _require(state, backbone + "patch_embed.patch_embeddings.weight")
        registers = state.get(backbone + "patch_embed.register_tokens")
        gated = backbone + "blocks.0.mlp.gate_proj.weight" in state
        ffn_width = _require(state, backbone + "blocks.0.mlp.down_proj.weight").shape[1]
        fields.update(
            qkv_bias=backbone + "blocks.0.attention.q_proj.bias" in state,
            key_bias=backbone + "blocks.0.attention.k_proj.bias" in state,
            position_embedding_type="rope",
            layer_norm_eps=DINOV3_LAYER_NORM_EPS,
            pos_embed_rescale=DINOV3_POS_EMBED_RESCALE,
            image_size=640,  # RoPE stores no grid; the authors' default input size
        )
        inv_freq = state.get(backbone + "rope_embeddings.inv_freq")  # non-persistent in transformers; rarely saved
        if inv_freq is not None and inv_freq.numel() > 1:
            head_dim = hidden_size // overrides.get("num_attention_heads", max(hidden_size // DINO_HEAD_DIM, 1))
            fields["rope_theta"] = round(float(inv_freq[1]) ** (-head_dim / 4), 4)  # inv_freq = theta^(-4k / head_dim)
    num_registers = 0 if registers is None else registers.shape[1]
    fields.update(
        num_channels=kernel.shape[1],
        patch_size=kernel.shape[-1],
        num_register_tokens=num_registers,
        ffn_type="swiglu" if gated else "mlp",  # DINOv2 ViT-g's SwiGLUPacked; DINOv3's gated MLP uses SiLU too
    )
    if ffn_width != default_ffn_hidden_size(hidden_size, 4.0, fields["ffn_type"]):
        fields["intermediate_size"] = ffn_width
    if flavour == "dinov2":
        positions = _require(state, backbone + "pos_embed")
        side, _ = timm_position_layout(positions.shape[1], num_registers)
        fields["image_size"] = side * kernel.shape[-1]
    if "num_attention_heads" not in overrides:
        if hidden_size % DINO_HEAD_DIM:
            raise ValueError(
                f"hidden size {hidden_size} is not a multiple of {DINO_HEAD_DIM}: "
                "pass num_attention_heads (--num-heads)"
            )
        fields["num_attention_heads"] = hidden_size // DINO_HEAD_DIM

    fixed = [f"{name}={overrides[name]!r} (checkpoint: {fields.get(name)!r})" for name in ORIGINAL_TENSOR_FIELDS
             if name in overrides and overrides[name] != fields.get(name)]  # fmt: skip
    if "ffn_type" in overrides and (overrides["ffn_type"] == "mlp") != (fields["ffn_type"] == "mlp"):
        fixed.append(f"ffn_type={overrides['ffn_type']!r} (checkpoint: {fields['ffn_type']!r})")  # gated or not
    if fixed:
        raise ValueError(f"these fields are fixed by the checkpoint's tensors: {', '.join(fixed)}")
    if dataset is not None:
        if "id2label" in overrides:
            raise ValueError("pass either dataset or id2label, not both")
        overrides["id2label"] = dataset_id2label(dataset)
    if "id2label" in overrides:
        id2label = {int(key): value for key, value in overrides["id2label"].items()}
        if len(id2label) != fields["num_labels"]:
            source = f"dataset {dataset!r}" if dataset else "id2label"
            raise ValueError(
                f"{source} has {len(id2label)} classes but the checkpoint's class head predicts {fields['num_labels']}"
            )
        overrides["id2label"] = id2label
        overrides.setdefault("label2id", {name: index for index, name in id2label.items()})
        del fields["num_labels"]
    fields.update(overrides)
    return EoMTConfig(**fields)


def state_dict_from_original(state: dict[str, Tensor], config: EoMTConfig) -> dict[str, Tensor]:
    """Our `EoMTForUniversalSegmentation` state dict from an original one (normalised by `normalise_original_state`).

    Class (and register) position embeddings are added to those tokens, the patch position embeddings are resampled
    to `config.grid_size` when it differs from the stored grid, and the pixel normalisation buffers are checked to be
    ImageNet's (the image processor's). Raises `ValueError` naming missing and unexpected keys."""
    keys = KeyTaker(state)
    state, take = keys.state, keys.take
    backbone, dinov3 = ORIGINAL_BACKBONE, config.position_embedding_type == "rope"
    out: dict[str, Tensor] = {}

    def move(pairs: list[tuple[str, str]]) -> None:
        for original, ours in pairs:
            out[ours] = take(original)

    _check_pixel_statistics(state.pop("network.encoder.pixel_mean", None), state.pop("network.encoder.pixel_std", None))
    embeddings = "eomt.embeddings."
    if dinov3:
        move(_expand(_DINOV3_EMBEDDING_KEYS, backbone, embeddings))
        registers = take(backbone + "patch_embed.register_tokens", optional=not config.num_register_tokens)
        if registers is not None and registers.shape[1] > 0:
            out[embeddings + "register_tokens"] = registers
        state.pop(backbone + "rope_embeddings.inv_freq", None)  # derived from rope_theta (read by the config)
    else:
        move(_expand((("patch_embed.proj.{p}", "patch_embeddings.{p}"),), backbone, embeddings))
        cls_token = take(backbone + "cls_token")
        registers = take(backbone + "reg_token", optional=not config.num_register_tokens)
        positions = take(backbone + "pos_embed")
        if cls_token is not None and positions is not None:
            prefix = cls_token if registers is None else torch.cat((cls_token, registers), dim=1)  # (1, 1 + R, C)
            side, num_prefix_positions = timm_position_layout(positions.shape[1], config.num_register_tokens)
            prefix, positions = absorb_prefix_positions(prefix, positions, num_prefix_positions)
            out[embeddings + "cls_token"] = prefix[:, :1]
            if registers is not None:
                out[embeddings + "register_tokens"] = prefix[:, 1:]
            positions = interpolate_position_embeddings(positions, (side, side), config.grid_size)  # (1, N, C)
            out[embeddings + "position_embeddings"] = positions

    for index in range(config.num_hidden_layers):
        source, target = f"{backbone}blocks.{index}.", f"eomt.layers.{index}."
        if not dinov3:
            pairs = _expand(_TIMM_BLOCK_KEYS, source, target)
            move([pair for pair in pairs if config.qkv_bias or not pair[0].endswith("qkv.bias")])
            continue
        move(_expand(_DINOV3_BLOCK_KEYS, source, target))
        attention, projections = source + "attention", ("q_proj", "k_proj", "v_proj")
        if all(f"{attention}.{name}.weight" in state for name in projections):
            out.update(fuse_qkv(state, attention, target + "attention", projections, config.key_bias))
        else:
            keys.missing.append(f"{attention}.{{q,k,v}}_proj.weight")
        for param in ("weight", "bias"):
            up = take(f"{source}mlp.up_proj.{param}")
            gate = take(f"{source}mlp.gate_proj.{param}") if config.ffn_type != "mlp" else None
            if up is not None:
                out[f"{target}mlp.fc1.{param}"] = up if gate is None else torch.cat((gate, up))  # gate first

    move(_expand(_HEAD_KEYS))
    for index in range(config.num_upscale_blocks):
        move(_expand(_UPSCALE_KEYS, f"network.upscale.{index}.", f"upscale_blocks.{index}."))
    keys.check("original EoMT checkpoint does not match the inferred architecture")
    return {key: value for key, value in out.items() if value is not None}  # no biases without `qkv_bias`


def _check_pixel_statistics(mean: Tensor | None, std: Tensor | None) -> None:
    """The authors' models normalise inputs in the network; ours expect the image processor's ImageNet statistics."""
    for name, value, expected in (("pixel_mean", mean, IMAGENET_MEAN), ("pixel_std", std, IMAGENET_STD)):
        if value is not None and not torch.allclose(value.flatten().float(), torch.tensor(expected), atol=1e-6):
            raise ValueError(
                f"network.encoder.{name} is {value.flatten().tolist()}, not ImageNet's {list(expected)}: this model "
                "normalises its inputs differently from what EoMT's image processor does"
            )


def is_delta_checkpoint(state: dict[str, Tensor]) -> bool:
    """Whether an original checkpoint holds deltas to its backbone's pre-trained weights (the authors' DINOv3 releases).

    The authors' loader adds such a checkpoint to a model whose backbone holds the pre-trained weights, whose other
    parameters are zero and whose buffers keep their initial values; a delta checkpoint therefore has an all-zero
    `pixel_mean` (a full one has ImageNet's)."""
    mean = state.get("network.encoder.pixel_mean")
    return mean is not None and not mean.any()


def add_delta_base(state: dict[str, Tensor], base_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Full weights from a delta checkpoint, as the authors' loader computes them: backbone tensors plus the
    pre-trained DINOv3 ones (`base_state`, a transformers `DINOv3ViTModel` state dict), pixel statistics plus
    ImageNet's, `attn_mask_probs` plus one, every other tensor as it is."""
    initial: dict[str, Tensor] = {}
    for key, value in base_state.items():
        key = key.removeprefix("model.")  # transformers 5 nests the layers under `model.`
        if key == "embeddings.mask_token":
            continue  # deleted by the authors' backbone wrapper
        key = re.sub(r"^layer\.", "blocks.", re.sub(r"^embeddings\.", "patch_embed.", key))
        initial[ORIGINAL_BACKBONE + key] = value
    initial["network.encoder.pixel_mean"] = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    initial["network.encoder.pixel_std"] = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    if "network.attn_mask_probs" in state:
        initial["network.attn_mask_probs"] = torch.ones_like(state["network.attn_mask_probs"])
    absent = sorted(key for key in state if key.startswith(ORIGINAL_BACKBONE) and key not in initial)
    if absent:
        raise ValueError(f"the delta base has no counterpart for {absent[:8]}: is it the model's pre-trained backbone?")
    mismatched = [f"{key}: delta {tuple(state[key].shape)} vs base {tuple(value.shape)}"
                  for key, value in initial.items() if key in state and state[key].shape != value.shape]  # fmt: skip
    if mismatched:
        raise ValueError("delta and base shapes differ: " + ", ".join(mismatched))
    return {key: value.float() + initial[key].float() if key in initial else value for key, value in state.items()}


def convert_original_checkpoint(
    path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    delta_base: str | os.PathLike | None = None,
    dataset: str | None = None,
    **overrides: Any,
) -> EoMTForUniversalSegmentation:
    """An `EoMTForUniversalSegmentation` (eval mode) from one of the authors' original checkpoints.

    Args:
        path: a `pytorch_model.bin` / Lightning `.ckpt` (read with `torch.load(weights_only=True)`) or `.safetensors`
            file with the authors' `network.` keys.
        output_dir: where to write the converted model with `save_pretrained` (safetensors), if given.
        delta_base: for checkpoints that hold deltas to the DINOv3 weights (the authors' DINOv3 releases): the
            transformers DINOv3 checkpoint they were trained from (local directory or Hub id).
        dataset: `id2label` preset (`"coco_panoptic"`, `"coco_instance"`, `"ade20k"`, `"cityscapes"`).
        overrides: config fields, e.g. `num_attention_heads`, `image_size` (resamples DINOv2 position embeddings),
            `id2label`.
    """
    source = str(path)
    state = normalise_original_state(load_weight_file(path), source)
    if is_delta_checkpoint(state) or delta_base is not None:
        mean = state.get("network.encoder.pixel_mean")
        if delta_base is None:
            raise ValueError(
                f"{source} holds deltas to the pre-trained DINOv3 weights (the authors' DINOv3 releases): pass the "
                "DINOv3 checkpoint it was trained from as delta_base (--delta-base), e.g. "
                "facebook/dinov3-vitl16-pretrain-lvd1689m"
            )
        if mean is not None and mean.any():
            raise ValueError(f"{source} holds full weights (its pixel_mean is not zero); do not pass delta_base")
        base_state, base_config = load_backbone(delta_base)
        if base_config["model_type"] != "dinov3_vit":
            raise ValueError(f"delta_base {delta_base} is a {base_config['model_type']} model, expected dinov3_vit")
        state = add_delta_base(state, base_state)
        backbone_fields = {name: base_config.get(name) for name in _DINOV3_FIELDS}
        backbone_fields["layer_norm_eps"] = base_config.get("layer_norm_eps", DINOV3_LAYER_NORM_EPS)
        backbone_fields["rope_theta"] = rope_theta_of(base_config)
        if base_config.get("use_gated_mlp") and base_config.get("hidden_act") == "gelu":
            backbone_fields["ffn_type"] = "glu"  # a GELU gate, like the mask head's activation
        overrides = {**backbone_fields, **overrides}
    try:
        config = config_from_original_checkpoint(state, dataset=dataset, **overrides)
        weights = state_dict_from_original(state, config)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
    model = EoMTForUniversalSegmentation(config)
    info = load_state_dict_with_info(model, weights)
    check_loading_info(EoMTForUniversalSegmentation, info, source, reinitialize_heads=False)
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# Loading with strict checks
# ----------------------------------------------------------------------------------------------------------------------

# Parameters created for segmentation (not part of a pre-trained ViT); `reinitialize_heads=True` lets them be
# missing from a checkpoint or of another shape (a new number of classes or queries) and initialises them afresh.
HEAD_PREFIXES = ("class_predictor.", "mask_head.", "upscale_blocks.", "eomt.query.", "query.", "attn_mask_probs")
# Keys of the segmentation model that a bare `EoMTModel` legitimately leaves unused.
SEGMENTATION_ONLY_PREFIXES = ("class_predictor.", "mask_head.", "upscale_blocks.", "attn_mask_probs")
_LOADER_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


def _is_head_key(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def check_loading_info(model_class: type, info: dict[str, Any], source: str, reinitialize_heads: bool) -> None:
    """Raise `ValueError` on any missing, unexpected or mismatched key, except re-initialised heads (when asked) and
    the segmentation heads a bare encoder does not use."""
    missing = sorted(info.get("missing_keys", ()))
    unexpected = sorted(info.get("unexpected_keys", ()))
    mismatched = sorted(info.get("mismatched_keys", ()))
    if reinitialize_heads:
        missing = [key for key in missing if not _is_head_key(key)]
        mismatched = [entry for entry in mismatched if not _is_head_key(entry[0])]
    if model_class.__name__ == "EoMTModel":
        unexpected = [key for key in unexpected if not key.startswith(SEGMENTATION_ONLY_PREFIXES)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append("shape mismatches " + ", ".join(f"{key}: checkpoint {tuple(a)} vs model {tuple(b)}" for key, a, b in mismatched))
    if info.get("error_msgs"):
        problems.extend(info["error_msgs"])
    if problems:
        keys = missing + [entry[0] for entry in mismatched]
        heads_only = bool(keys) and all(_is_head_key(key) for key in keys)
        hint = " (pass reinitialize_heads=True to fine-tune new heads, e.g. new classes)" if heads_only else ""
        raise ValueError(f"{source}: checkpoint does not match {model_class.__name__}: " + "; ".join(problems) + hint)


def load_state_dict_with_info(model: torch.nn.Module, state: dict[str, Tensor]) -> dict[str, Any]:
    """Load the tensors of `state` that fit `model` and return transformers-style loading info (`missing_keys`,
    `unexpected_keys`, `mismatched_keys`) for `check_loading_info`."""
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


def foreign_config_dict(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> dict[str, Any] | None:
    """The `config.json` of a transformers EoMT checkpoint at `name_or_path`, or None for any other checkpoint."""
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(str(name_or_path), **hub_kwargs)
    except OSError:
        return None  # transformers' own loader reports the problem
    return config_dict if is_transformers_eomt_config(config_dict) else None


def load_transformers_eomt(
    model_class: type, name_or_path: str | os.PathLike, config_dict: dict[str, Any], **kwargs: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build `model_class` from a checkpoint saved by transformers' `Eomt(Dinov3)ForUniversalSegmentation`; returns
    the model (eval mode) and its loading info, to be checked with `check_loading_info`. Other kwargs override
    config fields, as in `from_pretrained`."""
    hub_kwargs = {key: kwargs.pop(key) for key in _LOADER_KWARGS if key in kwargs}
    dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
    device = kwargs.pop("device_map", None)
    attn_implementation = kwargs.pop("attn_implementation", None)
    kwargs.pop("ignore_mismatched_sizes", None)
    config = kwargs.pop("config", None) or config_from_transformers_eomt(config_dict, **kwargs)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    directory = resolve_model_files(name_or_path, **hub_kwargs)
    state = load_state_dict_from_directory(directory)
    if any(key.startswith("network.") for key in state):
        raise ValueError(
            f"{directory}: the weights are the authors' original ones (`network.` keys), not transformers' EoMT "
            "format; convert them with `eomt convert` (modeling_eomt.conversion.convert_original_checkpoint)"
        )
    state = state_dict_from_transformers_eomt(state, config)
    if model_class.__name__ == "EoMTModel":
        state = {key.removeprefix("eomt."): value for key, value in state.items()}
    model = model_class(config)  # freshly initialised; loading below overwrites every matching tensor
    info = load_state_dict_with_info(model, state)
    if isinstance(dtype, str):
        dtype = None if dtype == "auto" else getattr(torch, dtype)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval(), info


# ----------------------------------------------------------------------------------------------------------------------
# One entry point for every format (`eomt convert`)
# ----------------------------------------------------------------------------------------------------------------------

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
    raise ValueError(
        f"{path}: model_type {model_type!r} is not an EoMT checkpoint "
        f"({TRANSFORMERS_EOMT_MODEL_TYPES} or {EoMTConfig.model_type!r})"
    )


def load_checkpoint(
    source: str | os.PathLike,
    source_format: str = "auto",
    delta_base: str | os.PathLike | None = None,
    dataset: str | None = None,
    **overrides: Any,
) -> EoMTForUniversalSegmentation:
    """An `EoMTForUniversalSegmentation` (eval mode) from an EoMT checkpoint in any supported format.

    `source_format`: `"auto"` (see `detect_checkpoint_format`), `"original"` (the authors' `network.` weights),
    `"transformers"` (transformers' `Eomt(Dinov3)ForUniversalSegmentation`) or `"ours"`. `delta_base`, `dataset` and
    `overrides` (config fields) as in `convert_original_checkpoint`."""
    from .labels import dataset_id2label

    if source_format == "auto":
        source_format = detect_checkpoint_format(source)
    if source_format not in CHECKPOINT_FORMATS + ("hub",):
        raise ValueError(f"source format {source_format!r} is not one of {CHECKPOINT_FORMATS}")
    if source_format == "original":
        path = Path(source) / PYTORCH_NAME if Path(source).is_dir() else Path(source)
        return convert_original_checkpoint(path, delta_base=delta_base, dataset=dataset, **overrides)
    if delta_base is not None:
        raise ValueError("delta_base applies to the authors' original checkpoints only")
    if dataset is not None:
        overrides["id2label"] = dataset_id2label(dataset)
    return EoMTForUniversalSegmentation.from_pretrained(source, **overrides).eval()


def convert_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    source_format: str = "auto",
    target_format: str = "ours",
    delta_base: str | os.PathLike | None = None,
    dataset: str | None = None,
    **overrides: Any,
) -> EoMTForUniversalSegmentation:
    """Convert an EoMT checkpoint in any supported format (see `load_checkpoint`) and write it to `output_dir`:
    `target_format` `"ours"` (`save_pretrained`, safetensors) or `"transformers"` (`save_as_transformers_eomt`)."""
    if target_format not in ("ours", "transformers"):
        raise ValueError(f"target format {target_format!r} is not 'ours' or 'transformers'")
    model = load_checkpoint(source, source_format, delta_base, dataset, **overrides)
    if target_format == "transformers":
        save_as_transformers_eomt(model, output_dir)
    else:
        model.save_pretrained(output_dir)
    return model
