"""transformers' own EoMT format (`model_type` "eomt" and "eomt_dinov3", the format of the authors' Hub
checkpoints) to and from this package's format, plus the safe weight-file reading every loader shares."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .configuration_eomt import EoMTConfig, default_ffn_hidden_size

TRANSFORMERS_EOMT_MODEL_TYPES = ("eomt", "eomt_dinov3")
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
    """A local directory as is, or a Hub repo id downloaded (config + weights) to the local cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path}: expected a model directory, got a file")
    from huggingface_hub import snapshot_download

    allowed = ["*.json", "*.safetensors", "*.bin"]
    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=allowed, **hub_kwargs))
    except Exception as error:
        raise OSError(f"{name_or_path}: not a local directory and could not be fetched from the Hub ({error})") from error


def read_config_dict(directory: str | os.PathLike) -> dict[str, Any]:
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json")
    return json.loads(config_path.read_text())


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
        rope = config_dict.get("rope_parameters") or {}
        fields["position_embedding_type"] = "rope"
        fields["rope_theta"] = rope.get("rope_theta", config_dict.get("rope_theta", 100.0))
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
        hint = "" if reinitialize_heads else " (pass reinitialize_heads=True to fine-tune new heads, e.g. new classes)"
        raise ValueError(f"{source}: checkpoint does not match {model_class.__name__}: " + "; ".join(problems) + hint)


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
    state = state_dict_from_transformers_eomt(load_state_dict_from_directory(directory), config)
    if model_class.__name__ == "EoMTModel":
        state = {key.removeprefix("eomt."): value for key, value in state.items()}
    model = model_class(config)  # freshly initialised; loading below overwrites every matching tensor
    expected = model.state_dict()
    mismatched = {
        (key, tuple(value.shape), tuple(expected[key].shape))
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    }
    skipped = {key for key, _, _ in mismatched}
    result = model.load_state_dict({key: value for key, value in state.items() if key not in skipped}, strict=False)
    info = {"missing_keys": set(result.missing_keys), "unexpected_keys": set(result.unexpected_keys), "mismatched_keys": mismatched}
    if isinstance(dtype, str):
        dtype = None if dtype == "auto" else getattr(torch, dtype)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval(), info
