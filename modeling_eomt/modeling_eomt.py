"""PyTorch EoMT: a plain ViT (DINOv2 / DINOv3) whose last blocks also process learnable queries that predict
classes and masks ("Your ViT is Secretly an Image Segmentation Model", CVPR 2025).

Token layout inside the last `num_blocks` blocks: `[queries (Q) | class (1) | registers (R) | patches (N)]`.

`EoMTModel` is the encoder: the ViT blocks, with the queries joined before block L1 = `num_hidden_layers -
num_blocks`. `EoMTForUniversalSegmentation._forward` runs the same blocks as the paper's loop: before each of the last
`num_blocks` blocks it predicts masks and classes (deep supervision) and, with probability `attn_mask_probs[i]`,
restricts each query's attention to its predicted mask. Faster ways to compute attention and the mask logits are in
`fast_paths`.

Given `mask_labels` and `class_labels`, `EoMTForUniversalSegmentation.forward` also returns the training loss
(`loss_eomt.MaskClassificationLoss`, every prediction level), as transformers' models do.

This file is also saved beside the weights as remote code (`image_processing.remote_code`), with its sibling modules
flattened and `EoMTHubMixin` (the installed package's other checkpoint formats, remote-code and model-card writing)
left out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.auto.modeling_auto import MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES
from transformers.utils import ModelOutput

from . import fast_paths, static_inference
from .checkpoints.geometry import interpolate_position_embeddings
from .checkpoints.loading import check_loading_info, check_model_directory, warn_nonfinite
from .configuration_eomt import EoMTConfig
from .hub import EoMTHubMixin
from .input_checks import check_attn_mask_probs, check_pixel_values
from .loss_eomt import MaskClassificationLoss, loss_from_labels
from .quantization import set_int8_linear_layers


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class EoMTModelOutput(ModelOutput):
    """
    Output of [`EoMTModel`].

    Args:
        last_hidden_state (`(batch, Q + 1 + R + N, hidden)`): final tokens after the final LayerNorm.
        query_tokens (`(batch, Q, hidden)`): the normalised query tokens.
        patch_tokens (`(batch, N, hidden)`): the normalised patch tokens, row-major over the patch grid.
        hidden_states (`tuple` of `(batch, tokens, hidden)`): embeddings output and every block's output (before
            the final LayerNorm); the token count grows by Q where the queries join. Returned on request.
        attentions (`tuple` of `(batch, heads, tokens, tokens)`): attention probabilities of every block. Returned
            on request.
    """

    last_hidden_state: Tensor | None = None
    query_tokens: Tensor | None = None
    patch_tokens: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class EoMTForUniversalSegmentationOutput(ModelOutput):
    """
    Output of [`EoMTForUniversalSegmentation`]; pass it to the image processor's `post_process_*` methods.

    Args:
        loss (`()`): the training loss (`MaskClassificationLoss`, summed over the final and every intermediate
            prediction) when the forward was given `mask_labels` and `class_labels`, else None.
        loss_components (`dict[str, Tensor]`): its unweighted parts, `loss_mask`, `loss_dice`,
            `loss_cross_entropy` for the final prediction and the same with `_block{i}` for intermediate prediction i.
        class_queries_logits (`(batch, Q, num_labels + 1)`): final class logits; the last class is "no object".
        masks_queries_logits (`(batch, Q, H / 4, W / 4)`): final mask logits (for patch 16 and 2 upscale blocks).
        intermediate_class_queries_logits (`tuple` of `(batch, Q, num_labels + 1)`): the predictions made before
            each of the last `num_blocks` blocks (deep supervision and masked attention), first block first. None in
            eval mode when every `attn_mask_probs` is 0 (an empty tuple would break the pipelines' un-batching).
        intermediate_masks_queries_logits (`tuple` of `(batch, Q, H / 4, W / 4)`): the matching mask logits.
        last_hidden_state, hidden_states, attentions: as in [`EoMTModelOutput`].
        patch_offsets (`list[Tensor]`): passed through for sliding-window semantic segmentation.
    """

    loss: Tensor | None = None
    loss_components: dict[str, Tensor] | None = None
    class_queries_logits: Tensor | None = None
    masks_queries_logits: Tensor | None = None
    intermediate_class_queries_logits: tuple[Tensor, ...] | None = None
    intermediate_masks_queries_logits: tuple[Tensor, ...] | None = None
    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    patch_offsets: list[Tensor] | None = None

    def float_logits(self) -> "EoMTForUniversalSegmentationOutput":
        """The same output with the class and mask logits (final and intermediate) in float32."""
        logits = {
            "class_queries_logits": self.class_queries_logits.float(),
            "masks_queries_logits": self.masks_queries_logits.float(),
        }
        for name in ("intermediate_class_queries_logits", "intermediate_masks_queries_logits"):
            if getattr(self, name) is not None:
                logits[name] = tuple(x.float() for x in getattr(self, name))
        return EoMTForUniversalSegmentationOutput(**{**self, **logits})


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------------------


class EoMTEmbeddings(nn.Module):
    """Patch embedding + class and register tokens (+ absolute position embeddings for DINOv2)."""

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.patch_embeddings = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        if config.num_register_tokens > 0:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))
        else:
            self.register_tokens = None
        if config.position_embedding_type == "absolute":
            num_patches = config.grid_size[0] * config.grid_size[1]
            # Patch positions only: the class and register tokens carry no position (DINOv2 with registers).
            self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches, config.hidden_size))
        else:
            self.position_embeddings = None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.num_prefix_tokens = 1 + config.num_register_tokens

    def forward(self, pixel_values: Tensor) -> Tensor:
        batch_size, _, height, width = pixel_values.shape
        grid = (height // self.patch_size, width // self.patch_size)
        dtype = self.patch_embeddings.weight.dtype
        patches = self.patch_embeddings(pixel_values.to(dtype)).flatten(2).transpose(1, 2)  # (B, N, C)
        if self.position_embeddings is not None:
            positions = interpolate_position_embeddings(
                self.position_embeddings, self.config.grid_size, grid, always=fast_paths.exporting()
            )  # (1, N, C)
            patches = patches + positions
        prefix = [self.cls_token.expand(batch_size, -1, -1)]
        if self.register_tokens is not None:
            prefix.append(self.register_tokens.expand(batch_size, -1, -1))
        embeddings = torch.cat([*prefix, patches], dim=1)  # (B, 1 + R + N, C)
        return self.dropout(embeddings)


class EoMTRopePositionEmbedding(nn.Module):
    """DINOv3's axial rotary embedding: patch-centre coordinates in [-1, 1], a quarter of each head per axis."""

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", self.compute_inv_freq(config), persistent=False)

    @staticmethod
    def compute_inv_freq(config: EoMTConfig) -> Tensor:
        """`(head_dim / 4,)` inverse periods `1 / theta^(4k / head_dim)`."""
        head_dim = config.hidden_size // config.num_attention_heads
        return 1.0 / config.rope_theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32)

    def patch_coordinates(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        """Centres of the patches as `(h * w, 2)` (y, x) in [-1, 1], augmented in training as configured."""
        coords_h = torch.arange(0.5, grid[0], device=device, dtype=torch.float32) / grid[0]
        coords_w = torch.arange(0.5, grid[1], device=device, dtype=torch.float32) / grid[1]
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        if self.training:
            config = self.config
            if config.pos_embed_shift is not None:
                coords = coords + torch.empty(1, 2, device=device).uniform_(-config.pos_embed_shift, config.pos_embed_shift)
            if config.pos_embed_jitter is not None:
                log_jitter = math.log(config.pos_embed_jitter)
                coords = coords * torch.empty(1, 2, device=device).uniform_(-log_jitter, log_jitter).exp()
            if config.pos_embed_rescale is not None:
                log_rescale = math.log(config.pos_embed_rescale)
                coords = coords * torch.empty(1, device=device).uniform_(-log_rescale, log_rescale).exp()
        return coords

    def forward(self, grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        coords = self.patch_coordinates(grid, device)  # (N, 2)
        angles = 2 * math.pi * coords[:, :, None] * self.inv_freq[None, None, :]  # (N, 2, D / 4)
        angles = angles.flatten(1, 2).tile(2)  # (N, D)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope_to_patches(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the last `N = cos.shape[0]` tokens of `x` `(B, heads, T, D)`; the query/prefix tokens stay as they are."""
    num_patches = cos.shape[0]
    prefix, patches = x.split((x.shape[-2] - num_patches, num_patches), dim=-2)
    patches = patches * cos + rotate_half(patches) * sin
    return torch.cat((prefix, patches), dim=-2)


# ----------------------------------------------------------------------------------------------------------------------
# Transformer block
# ----------------------------------------------------------------------------------------------------------------------


class EoMTAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, optionally masked for the query rows: eager (returns
    the attention weights) or `fast_paths.attention` (SDPA, or matmuls where those are faster).

    Without a key bias (DINOv3) the fused projection has no bias and separate `q_bias` / `v_bias` parameters.
    """

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        separate_biases = config.qkv_bias and not config.key_bias
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias and config.key_bias)
        if separate_biases:
            self.q_bias = nn.Parameter(torch.zeros(config.hidden_size))
            self.v_bias = nn.Parameter(torch.zeros(config.hidden_size))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout

    def project_qkv(self, hidden_states: Tensor) -> Tensor:
        """`(B, T, 3C)` query, key and value projections."""
        if self.q_bias is None:
            return self.qkv(hidden_states)
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        return F.linear(hidden_states, self.qkv.weight, bias)

    def forward(
        self,
        hidden_states: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        query_mask: Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            hidden_states: `(B, T, C)`.
            rope: `(cos, sin)`, each `(N, head_dim)`, applied to the last N tokens.
            query_mask: `(B, Q, T)` bool, True = may attend, for the first Q rows (the queries); the other rows
                attend everywhere.
        """
        batch_size, num_tokens, channels = hidden_states.shape
        qkv = self.project_qkv(hidden_states).reshape(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, D)
        if rope is not None:
            query = apply_rope_to_patches(query, *rope)
            key = apply_rope_to_patches(key, *rope)
        dropout = self.dropout if self.training else 0.0

        if output_attentions or self.config._attn_implementation == "eager":
            context, weights = self._eager(query, key, value, query_mask, dropout)
        else:
            context, weights = fast_paths.attention(query, key, value, query_mask, dropout, self.training), None
        context = context.transpose(1, 2).reshape(batch_size, num_tokens, channels)
        return self.proj(context), (weights if output_attentions else None)

    def _eager(self, query: Tensor, key: Tensor, value: Tensor, query_mask: Tensor | None, dropout: float) -> tuple[Tensor, Tensor]:
        logits = (query * self.scale) @ key.transpose(-2, -1)  # (B, heads, T, T)
        if query_mask is not None:
            num_queries = query_mask.shape[1]
            blocked = torch.zeros(logits.shape[0], 1, *logits.shape[-2:], dtype=torch.bool, device=logits.device)
            blocked[:, 0, :num_queries] = ~query_mask
            logits = logits.masked_fill(blocked, torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1)
        return F.dropout(weights, p=dropout, training=self.training) @ value, weights


class EoMTLayerScale(nn.Module):
    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layerscale_value)))

    def forward(self, hidden_states: Tensor) -> Tensor:
        return hidden_states * self.lambda1


class EoMTMLP(nn.Module):
    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.ffn_hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.ffn_hidden_size, config.hidden_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class EoMTGatedFFN(nn.Module):
    """Gated FFN with the gate and up projections fused in `fc1` (gate first): `fc2(act(gate) * up)`. The gate uses
    SiLU for `ffn_type="swiglu"` (DINOv2 ViT-g) and `hidden_act` for `ffn_type="glu"` (DINOv3's gated MLP)."""

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, 2 * config.ffn_hidden_size)
        self.activation = ACT2FN["silu" if config.ffn_type == "swiglu" else config.hidden_act]
        self.fc2 = nn.Linear(config.ffn_hidden_size, config.hidden_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        gate, up = self.fc1(hidden_states).chunk(2, dim=-1)
        return self.fc2(self.activation(gate) * up)


class EoMTDropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample with probability `drop_prob` in training."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class EoMTLayer(GradientCheckpointingLayer):
    """Pre-norm ViT block with LayerScale: x + ls1(attn(norm1(x))), then x + ls2(ffn(norm2(x)))."""

    def __init__(self, config: EoMTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = EoMTAttention(config)
        self.layer_scale1 = EoMTLayerScale(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = EoMTMLP(config) if config.ffn_type == "mlp" else EoMTGatedFFN(config)
        self.layer_scale2 = EoMTLayerScale(config)
        self.drop_path = EoMTDropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        hidden_states: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        query_mask: Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attention(self.norm1(hidden_states), rope, query_mask, output_attentions)
        hidden_states = hidden_states + self.drop_path(self.layer_scale1(attended))
        hidden_states = hidden_states + self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, weights


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation heads
# ----------------------------------------------------------------------------------------------------------------------


class EoMTLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a `(B, C, H, W)` map."""

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden_states = hidden_states.permute(0, 2, 3, 1)
        hidden_states = F.layer_norm(hidden_states, self.normalized_shape, self.weight, self.bias, self.eps)
        return hidden_states.permute(0, 3, 1, 2)


class EoMTUpscaleBlock(GradientCheckpointingLayer):
    """2x upscaling: ConvTranspose2d(k2, s2) -> act -> depthwise Conv2d(k3, no bias) -> LayerNorm over channels.

    Checkpointed with the transformer blocks (`activation_checkpointing_enable`): its activations at mask resolution,
    kept for every intermediate prediction, are most of the memory of a training step at small inputs."""

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.conv_transpose = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.activation = ACT2FN[config.hidden_act]
        self.depthwise_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = EoMTLayerNorm2d(dim, eps=1e-6)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.norm(self.depthwise_conv(self.activation(self.conv_transpose(hidden_states))))


class EoMTMaskHead(nn.Module):
    """Three-layer MLP turning query tokens into mask embeddings."""

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.fc3 = nn.Linear(dim, dim)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, queries: Tensor) -> Tensor:
        return self.fc3(self.activation(self.fc2(self.activation(self.fc1(queries)))))


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


class EoMTPreTrainedModel(EoMTHubMixin, PreTrainedModel):
    config_class = EoMTConfig
    config: EoMTConfig
    base_model_prefix = "eomt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["EoMTLayer"]
    _supports_sdpa = True
    accepts_loss_kwargs = False  # the loss is a per-batch mean: `Trainer` passes no `num_items_in_batch`

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, reinitialize_heads: bool = False, **kwargs
    ):
        """`PreTrainedModel.from_pretrained`, strict (and, with the package installed, also reading transformers' own
        EoMT checkpoints: see `EoMTHubMixin`).

        Any missing, unexpected or mismatched weight is a `ValueError`; with `reinitialize_heads=True` the
        segmentation heads (class head, mask head, upscale blocks, queries) may be missing or of another shape (e.g.
        `num_labels` changed for fine-tuning) and are initialised afresh. An unreadable `config.json` or safetensors
        file is a `ValueError` naming it; NaN or infinite weights are named in a warning.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        check_model_directory(pretrained_model_name_or_path)
        kwargs["ignore_mismatched_sizes"] = True  # mismatches are reported by check_loading_info below
        model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs)
        check_loading_info(model, info, str(pretrained_model_name_or_path), reinitialize_heads)
        warn_nonfinite(model, str(pretrained_model_name_or_path))
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, EoMTLayerScale):
            init.constant_(module.lambda1, self.config.layerscale_value)
        elif isinstance(module, EoMTRopePositionEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(self.config))  # non-persistent: rebuilt on load
        elif isinstance(module, EoMTAttention) and module.q_bias is not None:
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, EoMTEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            if module.register_tokens is not None:
                init.trunc_normal_(module.register_tokens, mean=0.0, std=std)
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
        elif isinstance(module, EoMTForUniversalSegmentation):
            init.ones_(module.attn_mask_probs)

    def _output_options(
        self, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
    ) -> tuple[bool, bool, bool]:
        """The forward's output switches, each defaulting to the config's."""
        config = self.config
        return (
            config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict,
        )


class _BlockOutputs:
    """Every block's output (after the embeddings') and attention weights, kept only when asked for."""

    def __init__(self, embeddings: Tensor, output_hidden_states: bool, output_attentions: bool) -> None:
        self.hidden_states: tuple[Tensor, ...] | None = (embeddings,) if output_hidden_states else None
        self.attentions: tuple[Tensor, ...] | None = () if output_attentions else None

    def add(self, hidden_states: Tensor, weights: Tensor | None) -> None:
        if self.hidden_states is not None:
            self.hidden_states += (hidden_states,)
        if self.attentions is not None:
            self.attentions += (weights,)


class EoMTModel(EoMTPreTrainedModel):
    """The EoMT encoder: a plain ViT whose last `num_blocks` blocks also process `num_queries` query tokens.

    Returns the normalised query and patch tokens, without masked attention (which needs the segmentation heads: see
    `EoMTForUniversalSegmentation`).
    """

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__(config)
        self.embeddings = EoMTEmbeddings(config)
        self.rope = EoMTRopePositionEmbedding(config) if config.position_embedding_type == "rope" else None
        self.query = nn.Embedding(config.num_queries, config.hidden_size)
        drop_rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList([EoMTLayer(config, drop_rates[i]) for i in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @property
    def num_prefix_tokens(self) -> int:
        """Class + register tokens."""
        return self.embeddings.num_prefix_tokens

    @property
    def first_query_block(self) -> int:
        """Index of the first block that sees the queries (L1 in the paper): `num_hidden_layers - num_blocks`."""
        return self.config.num_hidden_layers - self.config.num_blocks

    def forward(
        self,
        pixel_values: Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        original_sizes: Tensor | None = None,
        resized_sizes: Tensor | None = None,
        patch_offsets: list[Tensor] | None = None,
    ) -> EoMTModelOutput | tuple:
        """
        Args:
            pixel_values: `(B, C, H, W)` normalised images, H and W multiples of `patch_size`.
            original_sizes, resized_sizes, patch_offsets: the image processor's bookkeeping, accepted so that
                `model(**processor(images))` works; unused.
        """
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        check_pixel_values(pixel_values, self.config)
        hidden_states, rope, grid = self._embed(pixel_values)  # (B, 1 + R + N, C)
        recorded = _BlockOutputs(hidden_states, output_hidden_states, output_attentions)
        for index, layer in enumerate(self.layers):
            if index == self.first_query_block:
                hidden_states = self._join_queries(hidden_states)  # (B, Q + 1 + R + N, C)
            hidden_states, weights = layer(hidden_states, rope, output_attentions=output_attentions)
            recorded.add(hidden_states, weights)

        sequence_output = self.layernorm(hidden_states)
        output = EoMTModelOutput(
            last_hidden_state=sequence_output,
            query_tokens=sequence_output[:, : self.config.num_queries] if self.config.num_blocks > 0 else None,
            patch_tokens=sequence_output[:, -grid[0] * grid[1] :],
            hidden_states=recorded.hidden_states,
            attentions=recorded.attentions,
        )
        return output if return_dict else output.to_tuple()

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None, tuple[int, int]]:
        """The class, register and patch tokens `(B, 1 + R + N, C)`, DINOv3's rotary `(cos, sin)` (else None) and the
        patch grid `(h, w)`."""
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        hidden_states = self.embeddings(pixel_values)
        rope = self.rope(grid, hidden_states.device, hidden_states.dtype) if self.rope is not None else None
        return hidden_states, rope, grid

    def _join_queries(self, hidden_states: Tensor) -> Tensor:
        """Prepend the learnable queries: `(B, 1 + R + N, C)` -> `(B, Q + 1 + R + N, C)`."""
        queries = self.query.weight[None].expand(hidden_states.shape[0], -1, -1).to(hidden_states.dtype)
        return torch.cat((queries, hidden_states), dim=1)


class EoMTForUniversalSegmentation(EoMTPreTrainedModel):
    """EoMT with its class head, mask head and upscale blocks: semantic, instance and panoptic segmentation.

    `attn_mask_probs[i]` (a buffer, saved with the weights) is the probability that a query uses masked attention in
    the i-th of the last `num_blocks` blocks, drawn per image and per query; mask annealing lowers it from 1 to 0
    during training (`set_attn_mask_probs`). In eval mode, blocks whose probability is 0 run without masks and their
    intermediate predictions are not computed.
    """

    def __init__(self, config: EoMTConfig) -> None:
        super().__init__(config)
        self.eomt = EoMTModel(config)
        self.upscale_blocks = nn.ModuleList([EoMTUpscaleBlock(config) for _ in range(config.num_upscale_blocks)])
        self.mask_head = EoMTMaskHead(config)
        self.class_predictor = nn.Linear(config.hidden_size, config.num_labels + 1)
        self.register_buffer("attn_mask_probs", torch.ones(config.num_blocks))
        # `attn_mask_probs` as Python numbers for torch.export (`_read_attn_mask_probs`), read again by the setter,
        # `train` / `eval` and every forward outside export.
        self._attn_mask_probs_values: tuple[float, ...] = (1.0,) * config.num_blocks
        self.inference_dtype: torch.dtype | None = None
        self.compiled_inference: Callable | None = None
        self.static_inference: static_inference.StaticInference | None = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.eomt.get_input_embeddings()

    def set_attn_mask_probs(self, probs: float | Sequence[float] | Tensor) -> None:
        """Set the probability of masked attention in each of the last `num_blocks` blocks (mask annealing).

        Args:
            probs: one probability per masked block (`num_blocks` values, first block first), or one number for all,
                each in [0, 1]. 1: every query attends only within its predicted mask; 0: no masks (in eval mode the
                block also skips its intermediate prediction).
        """
        values = check_attn_mask_probs(probs, self.attn_mask_probs.numel()).to(self.attn_mask_probs.dtype)
        with torch.no_grad():
            self.attn_mask_probs.copy_(values)
        self._attn_mask_probs_values = tuple(values.tolist())  # from the CPU copy: no device sync

    def _read_attn_mask_probs(self) -> tuple[float, ...]:
        """`attn_mask_probs` as Python numbers, read from the buffer, except under torch.export: its graph cannot read
        a buffer's values and gets the values last read. Under torch.compile the read is a graph break: as constants
        in the graph the values would recompile it at every step of mask annealing."""
        if not fast_paths.exporting() and not self.attn_mask_probs.is_meta:
            self._attn_mask_probs_values = tuple(self.attn_mask_probs.tolist())
        return self._attn_mask_probs_values

    def train(self, mode: bool = True) -> "EoMTForUniversalSegmentation":
        """`nn.Module.train`, also reading `attn_mask_probs` for graphs traced afterwards."""
        self._read_attn_mask_probs()  # e.g. after `from_pretrained` or `load_state_dict`, before `torch.export`
        return super().train(mode)

    def enable_fast_inference(
        self,
        dtype: torch.dtype | str | None = "auto",
        compile: bool | str | Callable = False,
        static_shape: Sequence[int] | None = None,
    ) -> "EoMTForUniversalSegmentation":
        """Faster inference (eval mode) at a small cost in precision; returns the model, switched to eval mode.

        Args:
            dtype: run inference under `torch.autocast(dtype)`. bfloat16 runs the matmuls faster than float32 on CPUs
                with AVX-512 BF16 or AMX and on recent GPUs (on other CPUs several times slower: a warning says so);
                the logits are returned in float32 and differ from float32 inference by about 1% of their scale
                (float16: about 0.2%). "auto": the device's fastest (`fast_paths.fast_autocast_dtype`: bfloat16 where
                it is fast, float16 on GPUs without bfloat16, float32 on other CPUs). `"int8"` (or `torch.qint8`, CPU
                only): the transformer blocks' linear layers in int8 (`quantization.Int8Linear`), the rest as "auto";
                weights changed afterwards are not seen until `enable_fast_inference` is called again. None: plain
                float32.
            compile: `torch.compile` the inference forward with the weights frozen into the graph (inductor's
                `freezing`): each new input size compiles once, and weights changed afterwards are not seen until
                `enable_fast_inference` is called again. True for inductor, or another `torch.compile` backend (name
                or function; e.g. "aot_eager" to check the tracing without generating code).
            static_shape: `(batch, height, width)`: inputs of exactly this shape take a static path set up at the
                first such call on a snapshot of the weights and `attn_mask_probs` (`static_inference`: on CUDA one
                CUDA graph replayed per call, the fastest attention kernel measured once, and with `compile` the
                transformer blocks compiled alone). Outputs carry no autograd graph; other shapes take the path
                `dtype` and `compile` set up.
        Training mode is unaffected; `enable_fast_inference(None)` switches everything off.
        """
        device = next(self.parameters()).device
        autocast_dtype = static_inference.inference_autocast_dtype(dtype, static_shape, device)
        set_int8_linear_layers(self.eomt.layers, dtype in static_inference.INT8)
        compiled = static_inference.compile_forward(self._forward, compile)
        self.static_inference = None
        if static_shape is not None:
            self.static_inference = static_inference.StaticInference(self, static_shape, autocast_dtype, compile)
        self.inference_dtype, self.compiled_inference = autocast_dtype, compiled
        return self.eval()

    def forward(
        self,
        pixel_values: Tensor,
        mask_labels: list[Tensor] | None = None,
        class_labels: list[Tensor] | None = None,
        patch_offsets: list[Tensor] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        is_crowd: list[Tensor] | None = None,
        original_sizes: Tensor | None = None,
        resized_sizes: Tensor | None = None,
    ) -> EoMTForUniversalSegmentationOutput | tuple:
        """
        Args:
            pixel_values: `(B, C, H, W)` normalised images, H and W multiples of `patch_size`.
            mask_labels: per image `(n_i, H, W)` target masks at the resolution of `pixel_values` (transformers'
                name and format, as `EoMTImageProcessor(images, segmentation_maps=...)` returns them); with
                `class_labels` the output has the training loss.
            class_labels: per image `(n_i,)` class indices in `[0, num_labels)`.
            patch_offsets: passed through to the output for sliding-window post-processing.
            is_crowd: per image `(n_i,)` bool; crowd targets are left out of the loss (as in training).
            original_sizes, resized_sizes: the image processor's bookkeeping, accepted so that
                `model(**processor(images))` works; unused.
        """
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        check_pixel_values(pixel_values, self.config)
        if (mask_labels is None) != (class_labels is None):
            raise ValueError("the loss needs both mask_labels and class_labels (got only one of them)")
        static = self.static_inference is not None and not (self.training or output_attentions or output_hidden_states)
        if static and mask_labels is None:
            output = self.static_inference(pixel_values, patch_offsets)  # None where the static path does not apply
            if output is not None:
                return output if return_dict else output.to_tuple()
        inputs = (pixel_values, self._read_attn_mask_probs(), patch_offsets, output_attentions, output_hidden_states)
        if self.training:
            output = self._forward(*inputs)
        elif self.inference_dtype is None:  # the caller's autocast, if any, stays in force
            output = (self.compiled_inference or self._forward)(*inputs)
        else:
            with torch.autocast(pixel_values.device.type, dtype=self.inference_dtype):
                output = (self.compiled_inference or self._forward)(*inputs)
            output = output.float_logits()
        if mask_labels is not None:
            output.loss, output.loss_components = self.compute_loss(
                output, mask_labels, class_labels, is_crowd, input_size=tuple(pixel_values.shape[-2:])
            )
        return output if return_dict else output.to_tuple()

    def compute_loss(
        self,
        outputs: EoMTForUniversalSegmentationOutput,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
        is_crowd: Sequence[Tensor] | None = None,
        input_size: tuple[int, int] | None = None,
        loss_fn: MaskClassificationLoss | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of this model's `outputs` (final and intermediate predictions) and its components:
        `loss_eomt.loss_from_labels` (arguments as in `forward`; `input_size` the `(H, W)` of `pixel_values`, which the
        target masks must have), `loss_fn` defaulting to `MaskClassificationLoss.from_config(self.config)`."""
        loss_fn = loss_fn if loss_fn is not None else MaskClassificationLoss.from_config(self.config)
        return loss_from_labels(loss_fn, outputs, mask_labels, class_labels, is_crowd, input_size)

    def _forward(
        self,
        pixel_values: Tensor,
        attn_mask_probs: tuple[float, ...],
        patch_offsets: list[Tensor] | None,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> EoMTForUniversalSegmentationOutput:
        """The EoMT forward pass: a ViT whose last `num_blocks` blocks also carry the queries, each of those blocks
        preceded by a prediction (deep supervision) whose masks restrict the queries' attention."""
        eomt = self.eomt
        hidden_states, rope, grid = eomt._embed(pixel_values)  # the residual stream, (B, 1 + R + N, C)
        recorded = _BlockOutputs(hidden_states, output_hidden_states, output_attentions)
        intermediate_masks, intermediate_classes = [], []
        for index, layer in enumerate(eomt.layers):
            query_mask = None
            if index == eomt.first_query_block:  # L1: the queries join the residual stream
                hidden_states = eomt._join_queries(hidden_states)  # (B, Q + 1 + R + N, C)
            if index >= eomt.first_query_block:  # one of the last `num_blocks` blocks
                prob = attn_mask_probs[index - eomt.first_query_block]
                if self.training or prob > 0:  # in eval mode only the predictions that masks are made from
                    mask_logits, class_logits = self._predict_masks_and_classes(eomt.layernorm(hidden_states), grid)
                    intermediate_masks.append(mask_logits)
                    intermediate_classes.append(class_logits)
                    if prob > 0:
                        query_mask = self._sample_query_mask(mask_logits, grid, prob)  # (B, Q, Q + 1 + R + N)
            hidden_states, weights = layer(hidden_states, rope, query_mask, output_attentions)
            recorded.add(hidden_states, weights)

        sequence_output = eomt.layernorm(hidden_states)
        masks_queries_logits, class_queries_logits = self._predict_masks_and_classes(sequence_output, grid)
        return EoMTForUniversalSegmentationOutput(
            class_queries_logits=class_queries_logits,
            masks_queries_logits=masks_queries_logits,
            intermediate_class_queries_logits=tuple(intermediate_classes) or None,
            intermediate_masks_queries_logits=tuple(intermediate_masks) or None,
            last_hidden_state=sequence_output,
            hidden_states=recorded.hidden_states,
            attentions=recorded.attentions,
            patch_offsets=patch_offsets,
        )

    def _predict_masks_and_classes(self, normed_tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Mask logits `(B, Q, h * 2^u, w * 2^u)` and class logits `(B, Q, K + 1)` from the normalised tokens
        `(B, Q + 1 + R + N, C)`, `u` = `num_upscale_blocks`."""
        num_queries = self.config.num_queries
        queries = normed_tokens[:, :num_queries]  # (B, Q, C)
        patches = normed_tokens[:, num_queries + self.eomt.num_prefix_tokens :]  # (B, N, C)
        class_logits = self.class_predictor(queries)
        mask_embeddings = self.mask_head(queries)  # (B, Q, C)
        # (B, C, h, w) stored channels-last: the convolutions and the channel LayerNorm run on it without copies.
        pixel_features = patches.unflatten(1, grid).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        for index, block in enumerate(self.upscale_blocks):
            rows = fast_paths.band_rows(pixel_features)
            if rows is None:
                pixel_features = block(pixel_features)
            elif index < len(self.upscale_blocks) - 1:
                pixel_features = fast_paths.forward_in_bands(block, pixel_features, rows)
            else:  # the last block: the mask logits band by band, the upscaled features never whole
                return fast_paths.mask_logits_in_bands(mask_embeddings, block, pixel_features, rows), class_logits
        mask_logits = fast_paths.compute_mask_logits(mask_embeddings, pixel_features)  # (B, Q, H * W)
        return mask_logits.unflatten(2, pixel_features.shape[-2:]), class_logits

    def _sample_query_mask(self, mask_logits: Tensor, grid: tuple[int, int], prob: float) -> Tensor:
        """The queries' attention mask `(B, Q, T)`, True = may attend, from mask logits `(B, Q, H, W)`: a query
        attends to the queries, the class and register tokens, and the patches where its mask logit (resized
        bilinearly to the grid) is positive; with probability `1 - prob`, drawn per image and per query, to all."""
        with torch.no_grad():
            patch_mask = fast_paths.mask_logits_on_grid(mask_logits, grid).flatten(2) > 0  # (B, Q, N)
        if prob < 1:
            unmasked = torch.rand(patch_mask.shape[:2], device=patch_mask.device) > prob  # (B, Q)
            patch_mask = patch_mask | unmasked[..., None]
        batch, num_queries = patch_mask.shape[:2]
        always = patch_mask.new_ones(batch, num_queries, num_queries + self.eomt.num_prefix_tokens)
        return torch.cat((always, patch_mask), dim=-1)


# The image-segmentation pipeline checks a model's class name against this table only (registered classes are not
# consulted) and logs an error otherwise; the entry is inert for the auto classes (its model type has no built-in config).
MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES.setdefault(EoMTConfig.model_type, EoMTForUniversalSegmentation.__name__)
