"""Turning EoMT's per-query class and mask logits into segmentations (vectorised torch, on the outputs' device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def semantic_probabilities(class_queries_logits: Tensor, masks_queries_logits: Tensor) -> Tensor:
    """Per-class pixel scores `(B, K, h, w)`: sum over queries of P(class) (without "no object") x sigmoid(mask)."""
    class_probs = class_queries_logits.softmax(dim=-1)[..., :-1]  # (B, Q, K)
    mask_probs = masks_queries_logits.sigmoid()  # (B, Q, h, w)
    return torch.einsum("bqk,bqhw->bkhw", class_probs, mask_probs)


def semantic_segmentation(
    class_queries_logits: Tensor, masks_queries_logits: Tensor, target_size: tuple[int, int] | None = None
) -> Tensor:
    """Class index per pixel `(B, H, W)`, the mask logits resized bilinearly to `target_size` first (if given)."""
    if target_size is not None:
        masks_queries_logits = F.interpolate(masks_queries_logits, size=target_size, mode="bilinear", align_corners=False)
    return semantic_probabilities(class_queries_logits, masks_queries_logits).argmax(dim=1)
