"""Adapting converted weights to the model's geometry (timm's `checkpoint_filter_fn` lesson): the patch-embedding kernel
resampled to the patch size, the class (and register) tokens absorbing their position embeddings, the patch position
embeddings resampled to the patch grid. The model resamples its position embeddings at run time with the same
`interpolate_position_embeddings`."""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor

from ..configuration_eomt import EoMTConfig

PATCH_KERNEL = "eomt.embeddings.patch_embeddings.weight"
POSITIONS = "eomt.embeddings.position_embeddings"
CLASS_TOKEN, REGISTER_TOKENS = "eomt.embeddings.cls_token", "eomt.embeddings.register_tokens"


def interpolate_position_embeddings(
    position_embeddings: Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    antialias: bool = False,
    always: bool = False,
) -> Tensor:
    """Bicubically resample patch position embeddings `(1, old_h * old_w, C)` to `(1, new_h * new_w, C)` (in fp32).
    The same grid returns them as they are, unless `always` (a graph traced for any grid must not branch on its size;
    bicubic resampling to the same grid weighs each position by exactly 1 and its neighbours by 0)."""
    if not always and tuple(old_grid) == tuple(new_grid):
        return position_embeddings
    dim = position_embeddings.shape[-1]
    grid = position_embeddings.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=antialias)
    return grid.to(position_embeddings.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)


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


def adapt_geometry(
    state: dict[str, Tensor], config: EoMTConfig, prefix_positions: int = 0, antialias: bool = False
) -> dict[str, Tensor]:
    """A converted (canonical) state dict fitted to `config`'s patch size and grid.

    Args:
        state: our keys; `eomt.embeddings.position_embeddings`, if present, is `(1, P + N, C)` for a square grid of
            N patches, its first P (`prefix_positions`) rows those of the class (and register) tokens.
        config: the `EoMTConfig` to fit (`patch_size`, `grid_size`).
        antialias: resample the position embeddings with antialiasing, as the source model does at run time
            (transformers' DINOv2 with registers).
    """
    state = dict(state)
    if PATCH_KERNEL in state:
        state[PATCH_KERNEL] = resize_patch_kernel(state[PATCH_KERNEL], config.patch_size)
    positions = state.get(POSITIONS)
    if positions is None:
        return state
    side = math.isqrt(positions.shape[1] - prefix_positions)
    if side * side != positions.shape[1] - prefix_positions:
        raise ValueError(
            f"position embeddings of shape {tuple(positions.shape)} are not {prefix_positions} prefix position(s) + a "
            "square grid"
        )
    if prefix_positions:
        registers = state.get(REGISTER_TOKENS)
        prefix = state[CLASS_TOKEN] if registers is None else torch.cat((state[CLASS_TOKEN], registers), dim=1)
        prefix, positions = absorb_prefix_positions(prefix, positions, prefix_positions)  # (1, 1 + R, C), (1, N, C)
        state[CLASS_TOKEN] = prefix[:, :1]
        if registers is not None:
            state[REGISTER_TOKENS] = prefix[:, 1:]
    state[POSITIONS] = interpolate_position_embeddings(positions, (side, side), config.grid_size, antialias=antialias)
    return state
