"""Configuration of the Encoder-only Mask Transformer (EoMT)."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

# DINOv2 shapes of the standard ViT sizes: (hidden_size, num_hidden_layers, num_attention_heads, ffn_type).
SIZE_PRESETS: dict[str, tuple[int, int, int, str]] = {
    "S": (384, 12, 6, "mlp"),
    "B": (768, 12, 12, "mlp"),
    "L": (1024, 24, 16, "mlp"),
    "g": (1536, 40, 24, "swiglu"),
}

FFN_TYPES = ("mlp", "swiglu", "glu")
POSITION_EMBEDDING_TYPES = ("absolute", "rope")

# What each numeric field must be, checked before anything is computed from it (a config.json edited by hand, or
# written by another tool, may hold "64" or 2.5): field -> (kind, lowest value, lowest value allowed, highest value).
_POSITIVE, _NON_NEGATIVE, _PROBABILITY = (1, True, None), (0, True, None), (0, True, 1)
_FIELD_KINDS: dict[str, tuple[str, tuple[float, bool, float | None]]] = {
    **{name: ("int", _POSITIVE) for name in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size", "num_channels",
        "num_queries", "num_blocks", "train_num_points", "intermediate_size")},
    **{name: ("int", _NON_NEGATIVE) for name in ("num_register_tokens", "num_upscale_blocks")},
    **{name: ("float", (0, False, None)) for name in ("mlp_ratio", "layer_norm_eps", "rope_theta", "oversample_ratio")},
    **{name: ("float", _NON_NEGATIVE) for name in (
        "initializer_range", "class_weight", "mask_weight", "dice_weight", "no_object_weight")},
    **{name: ("float", _PROBABILITY) for name in (
        "drop_path_rate", "attention_dropout", "hidden_dropout_prob", "importance_sample_ratio")},
    **{name: ("float", (-math.inf, True, None)) for name in (
        "layerscale_value", "pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale")},
}  # fmt: skip
_OPTIONAL_FIELDS = ("intermediate_size", "pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale")


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with the numeric field `name` holding `value` (see `_FIELD_KINDS`), or None."""
    kind, (low, inclusive, high) = _FIELD_KINDS[name]
    if value is None and name in _OPTIONAL_FIELDS:
        return None
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        return f"{name} must be an integer, got {value!r} ({type(value).__name__})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r} ({type(value).__name__})"
    if value < low or (value == low and not inclusive) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f"{'>=' if inclusive else '>'} {low}"
        return f"{name} must be {bounds}, got {value!r}"
    return None


def default_ffn_hidden_size(hidden_size: int, mlp_ratio: float, ffn_type: str) -> int:
    """FFN width DINOv2 derives from `mlp_ratio`; for gated FFNs two thirds of it, rounded up to a multiple of 8."""
    width = int(hidden_size * mlp_ratio)
    return width if ffn_type == "mlp" else (int(width * 2 / 3) + 7) // 8 * 8


class EoMTConfig(PretrainedConfig):
    r"""
    Configuration of [`EoMTModel`] and [`EoMTForUniversalSegmentation`].

    Backbone (a plain ViT, DINOv2 or DINOv3 flavour):
        hidden_size (`int`, defaults to 1024): width of every token.
        num_hidden_layers (`int`, defaults to 24): number of transformer blocks.
        num_attention_heads (`int`, defaults to 16): heads per attention layer; must divide `hidden_size`.
        mlp_ratio (`float`, defaults to 4.0): FFN width as a multiple of `hidden_size` (used when
            `intermediate_size` is None).
        intermediate_size (`int`, *optional*): explicit FFN width (per branch for SwiGLU). Defaults to
            `hidden_size * mlp_ratio` (MLP) or DINOv2's rounded two thirds of it (SwiGLU).
        ffn_type (`str`, defaults to `"mlp"`): `"mlp"` (fc1 -> act -> fc2), `"swiglu"` (fused gate/up
            projection with a SiLU gate, DINOv2 ViT-g) or `"glu"` (the same with a `hidden_act` gate, DINOv3's
            gated MLP).
        hidden_act (`str`, defaults to `"gelu"`): activation of the MLP, the mask head and the upscale blocks.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm.
        layerscale_value (`float`, defaults to 1.0): initial value of the LayerScale factors.
        qkv_bias (`bool`, defaults to True): biases on the query/key/value projections.
        key_bias (`bool`, defaults to True): whether the key projection has a bias too (DINOv2 yes, DINOv3 no; with
            RoPE a key bias changes the attention, so it is kept at exactly zero when False).
        drop_path_rate (`float`, defaults to 0.0): stochastic-depth rate, increasing linearly to this value
            over the blocks.
        attention_dropout (`float`, defaults to 0.0): dropout on the attention probabilities.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout on the embeddings.
        image_size (`int`, defaults to 640): the training input size; absolute position embeddings are stored for
            this grid and interpolated for other input sizes.
        patch_size (`int`, defaults to 16): side of the square patches.
        num_channels (`int`, defaults to 3): input channels.
        num_register_tokens (`int`, defaults to 4): register tokens after the class token (0 for plain DINOv2).
        position_embedding_type (`str`, defaults to `"absolute"`): `"absolute"` (DINOv2, learned, bicubic
            interpolation) or `"rope"` (DINOv3 axial rotary embedding on the patch tokens).
        rope_theta (`float`, defaults to 100.0): RoPE base period (DINOv3).
        pos_embed_shift, pos_embed_jitter, pos_embed_rescale (`float`, *optional*): DINOv3's training-time RoPE
            coordinate augmentation (uniform shift, log-uniform per-axis jitter, log-uniform rescale); unused in eval.

    Segmentation:
        num_queries (`int`, defaults to 200): learnable query tokens.
        num_blocks (`int`, defaults to 4): the last blocks that process queries jointly with the patches and use
            masked attention during training (L2 in the paper).
        num_upscale_blocks (`int`, defaults to 2): 2x upscaling blocks applied to the patch grid before the mask
            product (2 gives masks at 1/4 of the input for patch size 16).
        num_labels (`int`): number of classes; the class head predicts `num_labels + 1` logits ("no object" last).
        category_ids (`list[int]`, *optional*): the data set's own category id of each class index (e.g. COCO's
            non-contiguous ids 1, 2, ..., 90), written by `eomt predict` in its COCO-format results; None: COCO's ids
            for COCO's classes, else the class indices.

    Provenance:
        training_summary (`dict`, *optional*): what the model card (`README.md`, written by `save_pretrained`) reports
            about how the weights were made: `base_model`, `dataset` (`name`, `task`, `train_split`, `eval_split`),
            `recipe` (the settings used) and `eval_results` (metric -> value). Filled by the training code.

    Loss coefficients (defaults of the paper's recipe, read by the training loss):
        class_weight (2.0), mask_weight (5.0), dice_weight (5.0), no_object_weight (0.1),
        train_num_points (12544: the most sampled points per mask; the loss takes at most one per mask-logit pixel),
        oversample_ratio (3.0), importance_sample_ratio (0.75).
    """

    model_type = "eomt_vit"

    def __init__(
        self,
        hidden_size: int = 1024,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        intermediate_size: int | None = None,
        ffn_type: str = "mlp",
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        layerscale_value: float = 1.0,
        qkv_bias: bool = True,
        key_bias: bool = True,
        drop_path_rate: float = 0.0,
        attention_dropout: float = 0.0,
        hidden_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        image_size: int = 640,
        patch_size: int = 16,
        num_channels: int = 3,
        num_register_tokens: int = 4,
        position_embedding_type: str = "absolute",
        rope_theta: float = 100.0,
        pos_embed_shift: float | None = None,
        pos_embed_jitter: float | None = None,
        pos_embed_rescale: float | None = None,
        num_queries: int = 200,
        num_blocks: int = 4,
        num_upscale_blocks: int = 2,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        category_ids: list[int] | None = None,
        training_summary: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.mlp_ratio = mlp_ratio
        self.ffn_type = ffn_type
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.layerscale_value = layerscale_value
        self.qkv_bias = qkv_bias
        self.key_bias = key_bias
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.hidden_dropout_prob = hidden_dropout_prob
        self.initializer_range = initializer_range
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.num_register_tokens = num_register_tokens
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.pos_embed_shift = pos_embed_shift
        self.pos_embed_jitter = pos_embed_jitter
        self.pos_embed_rescale = pos_embed_rescale
        self.num_queries = num_queries
        self.num_blocks = num_blocks
        self.num_upscale_blocks = num_upscale_blocks
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.category_ids = None if category_ids is None else [int(category) for category in category_ids]
        self.training_summary = training_summary
        super().__init__(**kwargs)
        self.validate_architecture()

    @property
    def ffn_hidden_size(self) -> int:
        """Width of the FFN hidden layer (per branch for SwiGLU)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return default_ffn_hidden_size(self.hidden_size, self.mlp_ratio, self.ffn_type)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid of an `image_size` input, the grid the absolute position embeddings are stored for."""
        side = self.image_size // self.patch_size
        return side, side

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "EoMTConfig":
        """`PretrainedConfig.from_pretrained`; an invalid field, or a `config.json` that is not a JSON object, is a
        `ValueError` naming the file."""
        from .checkpoints.io import read_config_dict

        if (Path(pretrained_model_name_or_path) / "config.json").is_file():
            read_config_dict(pretrained_model_name_or_path)  # names the file if it is not a JSON object
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ValueError as error:
            source = Path(pretrained_model_name_or_path)
            source = source / "config.json" if source.is_dir() else pretrained_model_name_or_path
            raise ValueError(f"{source}: {error}") from None

    def validate_architecture(self) -> None:
        """Raise a `ValueError` naming the field when a field has the wrong type or range, or the architecture fields
        are inconsistent."""
        problems = [problem for name in _FIELD_KINDS if (problem := _field_problem(name, getattr(self, name)))]
        for name, choices in (("ffn_type", FFN_TYPES), ("position_embedding_type", POSITION_EMBEDDING_TYPES)):
            if getattr(self, name) not in choices:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {choices}")
        if not isinstance(self.hidden_act, str):
            problems.append(f"hidden_act must be the name of an activation, got {self.hidden_act!r}")
        if problems:  # the checks below compute with the fields
            raise ValueError("Invalid EoMTConfig: " + "; ".join(problems))
        if self.hidden_size % self.num_attention_heads != 0:
            problems.append(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if not 1 <= self.num_blocks <= self.num_hidden_layers:
            problems.append(
                f"num_blocks={self.num_blocks} must be between 1 and num_hidden_layers={self.num_hidden_layers}"
            )
        if self.position_embedding_type == "rope" and (self.hidden_size // self.num_attention_heads) % 4:
            problems.append(f"RoPE needs a head dimension divisible by 4, got {self.hidden_size // self.num_attention_heads}")
        if self.image_size % self.patch_size != 0:
            problems.append(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if problems:
            raise ValueError("Invalid EoMTConfig: " + "; ".join(problems))

    @classmethod
    def from_size(cls, size: str, **kwargs: Any) -> "EoMTConfig":
        """Config with the DINOv2 shapes of ViT size `size` (`"S"`, `"B"`, `"L"` or `"g"`); kwargs override."""
        key = {"small": "S", "base": "B", "large": "L", "giant": "g"}.get(size.lower(), size)
        key = key.upper() if key.upper() in ("S", "B", "L") else key
        if key not in SIZE_PRESETS:
            raise ValueError(f"Unknown size {size!r}: expected one of {sorted(SIZE_PRESETS)}")
        hidden, layers, heads, ffn = SIZE_PRESETS[key]
        defaults: dict[str, Any] = dict(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, ffn_type=ffn
        )
        defaults.update(kwargs)
        return cls(**defaults)
