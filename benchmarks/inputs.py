"""Synthetic inputs of the benchmarks: random photos, and model outputs that look like a trained EoMT's (also used by
the post-processing tests)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def random_photos(count: int, height: int, width: int, seed: int) -> list[Image.Image]:
    """`count` random RGB PIL images."""
    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def synthetic_outputs(
    batch_size: int,
    num_queries: int = 200,
    num_classes: int = 133,
    mask_size: tuple[int, int] = (160, 160),
    num_objects: tuple[int, int] = (5, 30),
    class_pool: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs `(B, Q, K + 1)`, `(B, Q, h, w)` that look like a trained EoMT's: per image, 5-30 queries (drawn
    from `num_objects`) confidently predict a class (probability ~0.65-0.99) with a mask covering one cell of a
    random partition of the image (soft edges); the others predict "no object" (~0.99) with smooth, mostly
    negative mask logits. Object classes are drawn from `class_pool` (default: all classes)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = mask_size
    class_logits = torch.randn(batch_size, num_queries, num_classes + 1, generator=generator)
    class_logits[..., -1] += 10.0
    noise = torch.randn(batch_size, num_queries, max(1, height // 8), max(1, width // 8), generator=generator)
    mask_logits = F.interpolate(noise, size=mask_size, mode="bilinear", align_corners=False) * 4.0 - 4.0
    rows, cols = torch.meshgrid(torch.arange(height) / height, torch.arange(width) / width, indexing="ij")
    grid = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    pool = torch.as_tensor(list(class_pool) if class_pool is not None else range(num_classes))
    for b in range(batch_size):
        count = min(num_queries, int(torch.randint(num_objects[0], num_objects[1] + 1, (1,), generator=generator)))
        queries = torch.randperm(num_queries, generator=generator)[:count]
        classes = pool[torch.randint(0, len(pool), (count,), generator=generator)]
        cells = torch.cdist(grid, torch.rand(count, 2, generator=generator)).argmin(1).view(height, width)
        inside = (cells[None] == torch.arange(count)[:, None, None]).float()
        soft = F.avg_pool2d(inside[None], 5, stride=1, padding=2, count_include_pad=False)[0]
        mask_logits[b, queries] = (soft - 0.5) * 16.0 + 0.5 * torch.randn(count, height, width, generator=generator)
        class_logits[b, queries, -1] = 0.0
        class_logits[b, queries, classes] = 6.0 + 5.0 * torch.rand(count, generator=generator)
    return class_logits, mask_logits


def synthetic_window_outputs(
    resized_sizes: Sequence[tuple[int, int]], window: int, num_queries: int = 200, num_classes: int = 150, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
    """Outputs of sliding windows over images resized to `resized_sizes` that agree where windows overlap, as a
    trained model's do: `synthetic_outputs` for each whole image, cut into `window`-pixel windows (mask logits are
    1/4 of the pixels). Returns the class logits, mask logits (one row per window) and the window offsets."""
    class_rows, mask_rows, offsets = [], [], []
    for index, size in enumerate(resized_sizes):
        class_logits, mask_logits = synthetic_outputs(
            1, num_queries, num_classes, (size[0] // 4, size[1] // 4), seed=seed + index
        )
        for offset in window_offsets(size, window, index):
            start = offset[1] // 4
            rows = slice(start, start + window // 4) if size[0] > size[1] else slice(0, window // 4)
            cols = slice(0, window // 4) if size[0] > size[1] else slice(start, start + window // 4)
            class_rows.append(class_logits[0])
            mask_rows.append(mask_logits[0, :, rows, cols])
            offsets.append(offset)
    return torch.stack(class_rows), torch.stack(mask_rows), offsets


def window_offsets(resized_size: tuple[int, int], window: int, image_index: int) -> list[tuple[int, int, int]]:
    """Sliding windows `(image_index, start, end)` along the longer side, evenly overlapping (transformers' split)."""
    longer = max(resized_size)
    count = math.ceil(longer / window)
    overlap = (count * window - longer) / (count - 1) if count > 1 else 0
    return [(image_index, int(i * (window - overlap)), int(i * (window - overlap)) + window) for i in range(count)]
