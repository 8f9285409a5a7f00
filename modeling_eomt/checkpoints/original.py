"""The authors' original checkpoints (tue-mps/eomt: Lightning `.ckpt` / `pytorch_model.bin`, keys under `network.`,
a timm DINOv2 or a transformers DINOv3 backbone), including the DINOv3 releases that hold deltas to the pre-trained
backbone. The architecture is inferred from the tensors."""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

import torch
from torch import Tensor

from image_processing.transforms import IMAGENET_MEAN, IMAGENET_STD  # what the image processor normalises with

from ..configuration_eomt import EoMTConfig, default_ffn_hidden_size
from ..labels import dataset_id2label
from .backbones import DINOV3_AUGMENTATION_FIELDS, backbone_rows, in_memory_names, load_backbone, vit_fields
from .formats import FORMAT_DESCRIPTIONS, detect_state_dict_format
from .geometry import CLASS_TOKEN, POSITIONS, REGISTER_TOKENS, adapt_geometry, timm_position_layout
from .io import load_weight_file
from .loading import ModelT, check_loading_info, load_state_dict_with_info
from .renaming import RenameTable, Row, map_rows

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
# The authors' DINOv3 backbone is transformers' `DINOv3ViTModel` with its embeddings and layers renamed.
_DINOV3_RENAMES = (("embeddings.", "patch_embed."), ("layer.", "blocks."))
_TIMM_ROWS: tuple[Row, ...] = (  # timm `VisionTransformer` (DINOv2), under `network.encoder.backbone.`
    ("patch_embed.proj.{p}", "eomt.embeddings.patch_embeddings.{p}"), ("cls_token", CLASS_TOKEN),
    ("pos_embed", POSITIONS), ("norm.{p}", "eomt.layernorm.{p}"),
)  # fmt: skip
_TIMM_BLOCK_ROWS: tuple[Row, ...] = (  # timm `Block` -> `EoMTLayer`; `SwiGLUPacked` keeps the gate first in `fc1` too
    ("norm1.{p}", "norm1.{p}"), ("attn.qkv.weight", "attention.qkv.weight"), ("attn.proj.{p}", "attention.proj.{p}"),
    ("ls1.gamma", "layer_scale1.lambda1"), ("norm2.{p}", "norm2.{p}"), ("mlp.fc1.{p}", "mlp.fc1.{p}"),
    ("mlp.fc2.{p}", "mlp.fc2.{p}"), ("ls2.gamma", "layer_scale2.lambda1"),
)  # fmt: skip
_HEAD_ROWS: tuple[Row, ...] = (
    ("network.q.weight", "eomt.query.weight"), ("network.class_head.{p}", "class_predictor.{p}"),
    ("network.mask_head.0.{p}", "mask_head.fc1.{p}"), ("network.mask_head.2.{p}", "mask_head.fc2.{p}"),
    ("network.mask_head.4.{p}", "mask_head.fc3.{p}"), ("network.attn_mask_probs", "attn_mask_probs"),
    ("network.upscale.{j}.conv1.{p}", "upscale_blocks.{j}.conv_transpose.{p}"),  # `ScaleBlock` -> `EoMTUpscaleBlock`
    ("network.upscale.{j}.conv2.weight", "upscale_blocks.{j}.depthwise_conv.weight"),
    ("network.upscale.{j}.norm.{p}", "upscale_blocks.{j}.norm.{p}"),
)  # fmt: skip


def dinov3_key_in_original(key: str) -> str:
    """Where the authors' checkpoints keep the tensor of a `DINOv3ViTModel` (in-memory name) `key`."""
    for name, original in _DINOV3_RENAMES:
        if key.startswith(name):
            return ORIGINAL_BACKBONE + original + key.removeprefix(name)
    return ORIGINAL_BACKBONE + key


def original_table(config: EoMTConfig) -> RenameTable:
    """The authors' keys <-> ours, for `config`."""
    if config.position_embedding_type == "rope":
        rows = map_rows(backbone_rows("dinov3_vit", config), dinov3_key_in_original)
    else:
        block, block_rows = ORIGINAL_BACKBONE + "blocks.{i}.", list(_TIMM_BLOCK_ROWS)
        if config.qkv_bias:
            block_rows.append(("attn.qkv.bias", "attention.qkv.bias"))
        rows = map_rows(_TIMM_ROWS, lambda key: ORIGINAL_BACKBONE + key)
        rows += map_rows(block_rows, lambda key: block + key, lambda key: "eomt.layers.{i}." + key)
        if config.num_register_tokens:
            rows.append((ORIGINAL_BACKBONE + "reg_token", REGISTER_TOKENS))
    return RenameTable([*rows, *_HEAD_ROWS], config.num_hidden_layers, config.num_upscale_blocks)


def normalise_original_state(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The `network.` tensors of an original checkpoint, without `torch.compile`'s `_orig_mod.`, the loss buffer
    (`criterion.empty_weight`) and empty tensors (zero register tokens). Raises `ValueError` when the file is not an
    original EoMT checkpoint."""
    state = {key.replace("._orig_mod", "").replace("_orig_mod.", ""): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith("criterion.") and value.numel()}
    foreign = sorted(key for key in state if not key.startswith("network."))
    if foreign:
        detected, hint = detect_state_dict_format(state), ""
        if detected != "original":
            hint = f"; the keys are those of {FORMAT_DESCRIPTIONS[detected]}" if detected else ""
            hint = f" (not an original EoMT checkpoint?{hint})"
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
def config_from_original_checkpoint(
    state: dict[str, Tensor], dataset: str | None = None, **overrides: Any
) -> EoMTConfig:
    """`EoMTConfig` inferred from the tensors of an original checkpoint (normalised by `normalise_original_state`).

    Width, depth, registers, patch size, stored grid (`image_size` = grid * patch), queries, classes, `num_blocks`
    (from `attn_mask_probs`), upscale blocks, MLP vs SwiGLU, DINOv2 vs DINOv3 and the key bias come from the tensors;
    heads default to width / 64 as in every DINOv2 / DINOv3 size. `overrides` set any other field
    (`num_attention_heads`, `image_size`, `id2label`, ...); `dataset` picks an `id2label` preset
    (`modeling_eomt.labels.DATASET_CLASSES`)."""
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
    state = dict(state)
    _check_pixel_statistics(state.pop("network.encoder.pixel_mean", None), state.pop("network.encoder.pixel_std", None))
    state.pop(ORIGINAL_BACKBONE + "rope_embeddings.inv_freq", None)  # derived from rope_theta (read by the config)
    renamed = original_table(config).to_ours(state)
    weights = renamed.check("original EoMT checkpoint does not match the inferred architecture")
    prefix_positions = 0
    if POSITIONS in weights:
        _, prefix_positions = timm_position_layout(weights[POSITIONS].shape[1], config.num_register_tokens)
    return adapt_geometry(weights, config, prefix_positions)


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
    initial = {dinov3_key_in_original(key): value for key, value in in_memory_names(base_state).items()}
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


def _add_delta_base_from(
    state: dict[str, Tensor], delta_base: str | os.PathLike | None, source: str
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The full weights of a delta checkpoint and the config fields its DINOv3 base determines."""
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
    base_fields = vit_fields(base_config, "DINOv3 delta bases")
    fields = {name: base_fields[name] for name in (*DINOV3_AUGMENTATION_FIELDS, "rope_theta")}
    fields["layer_norm_eps"] = base_config.get("layer_norm_eps", DINOV3_LAYER_NORM_EPS)
    if base_fields["ffn_type"] == "glu" and base_config.get("hidden_act") == "gelu":
        fields["ffn_type"] = "glu"  # a GELU gate, like the mask head's activation
    return add_delta_base(state, base_state), fields


def convert_original_checkpoint(
    model_class: type[ModelT],
    path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    delta_base: str | os.PathLike | None = None,
    dataset: str | None = None,
    **overrides: Any,
) -> ModelT:
    """A `model_class` (`EoMTForUniversalSegmentation`; eval mode) from one of the authors' original checkpoints.

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
        state, base_fields = _add_delta_base_from(state, delta_base, source)
        overrides = {**base_fields, **overrides}
    try:
        config = config_from_original_checkpoint(state, dataset=dataset, **overrides)
        weights = state_dict_from_original(state, config)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
    model = model_class(config)
    check_loading_info(model, load_state_dict_with_info(model, weights), source, reinitialize_heads=False)
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model.eval()
