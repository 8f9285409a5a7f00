"""Model outputs shaped like a trained EoMT's on a busy scene, for timing post-processing where it is slow.

`benchmarks.inputs.synthetic_outputs` tiles the image with a few confident queries and makes every other query
predict "no object" with probability ~0.99; post-processing can then ignore those queries. A trained model is less
tidy: its unused queries keep a few percent of class probability and masks of their own, duplicates shadow real
objects, and objects overlap. `realistic_outputs` draws such outputs, deterministically from a seed:

* `num_confident` queries per image (default 40) predict one class with probability ~0.25-0.99 (most above 0.8)
  and a blob-shaped mask: an ellipse with a wobbly edge, logits rising with the distance inside (steep, as a trained
  mask head's), clipped to [-20, 15]; blobs sit on a jittered grid, so they cover most of the image and overlap
  their neighbours at the edges;
* the other queries are unsure: "no object" with probability ~0.2-0.95 and the rest spread over the classes (best
  class ~0.5-13 % with 133 classes), with smooth, mostly negative masks; a quarter of them are weak, shifted
  duplicates of a confident blob.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _smooth_noise(count: int, size: tuple[int, int], cell: int, generator: torch.Generator) -> Tensor:
    """`(count, h, w)` standard-normal-ish noise varying over about `cell` pixels."""
    coarse = torch.randn(count, 1, max(2, size[0] // cell), max(2, size[1] // cell), generator=generator)
    fine = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)[:, 0]
    return fine / fine.flatten(1).std(1).clamp(min=1e-6)[:, None, None]


def _blobs(count: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Mask logits `(count, h, w)` of wobbly ellipses: positive inside, about 1.5-3 per pixel of signed distance."""
    height, width = size
    scale = min(height, width)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    # centres on a jittered grid of about `count` cells and sizes near the grid's pitch: the blobs cover most of the
    # image, as a scene's objects and "stuff" regions do, and overlap their neighbours at the edges
    grid_rows = max(1, round(math.sqrt(count)))
    grid_cols = math.ceil(count / grid_rows)
    cells = torch.randperm(grid_rows * grid_cols, generator=generator)[:count]
    jitter = torch.rand(count, 2, generator=generator) - 0.5
    pitch = torch.tensor([height / grid_rows, width / grid_cols])
    centres = (torch.stack([cells // grid_cols, cells % grid_cols], dim=1) + 0.5 + 0.6 * jitter) * pitch
    axes = pitch.min() * (0.45 + 0.45 * torch.rand(count, 2, generator=generator))  # semi-axes in pixels
    angles = math.pi * torch.rand(count, generator=generator)
    slopes = 1.5 + 1.5 * torch.rand(count, generator=generator)
    wobble = _smooth_noise(count, size, max(2, scale // 10), generator)
    logits = []
    for i in range(count):
        dy, dx = rows - centres[i, 0], cols - centres[i, 1]
        cos, sin = math.cos(float(angles[i])), math.sin(float(angles[i]))
        u, v = (cos * dx + sin * dy) / axes[i, 0], (-sin * dx + cos * dy) / axes[i, 1]
        radius = torch.sqrt(u * u + v * v)
        distance = (1 - radius) * axes[i].min() + 0.08 * axes[i].min() * wobble[i]  # ~ pixels inside the edge
        logits.append((slopes[i] * distance).clamp(-20.0, 15.0))
    return torch.stack(logits)


def realistic_outputs(
    batch_size: int,
    num_queries: int = 200,
    num_classes: int = 133,
    mask_size: tuple[int, int] = (160, 160),
    num_confident: int = 40,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Class logits `(B, Q, K + 1)` ("no object" last) and mask logits `(B, Q, h, w)` of a busy scene (see the
    module docstring); the same seed gives the same outputs."""
    if batch_size < 1 or num_queries < 1 or num_classes < 1 or min(mask_size) < 2:
        raise ValueError(
            f"realistic_outputs needs batch_size, num_queries, num_classes >= 1 and a mask size of at least 2 x 2; got "
            f"{batch_size}, {num_queries}, {num_classes}, {tuple(mask_size)}"
        )
    generator = torch.Generator().manual_seed(seed)
    size = (int(mask_size[0]), int(mask_size[1]))
    confident_count = max(0, min(num_confident, num_queries))
    class_logits = torch.randn(batch_size, num_queries, num_classes + 1, generator=generator)
    # unsure queries: "no object" logit 4-8 against ~133 standard-normal class logits
    class_logits[..., -1] = 4.0 + 4.0 * torch.rand(batch_size, num_queries, generator=generator)
    mask_logits = 3.0 * _smooth_noise(batch_size * num_queries, size, max(2, min(size) // 8), generator) - 6.0
    mask_logits = mask_logits.view(batch_size, num_queries, *size)
    for b in range(batch_size):
        order = torch.randperm(num_queries, generator=generator)
        confident, unsure = order[:confident_count], order[confident_count:]
        if confident_count:
            labels = torch.randint(0, num_classes, (confident_count,), generator=generator)
            class_logits[b, confident, -1] = torch.randn(confident_count, generator=generator)
            class_logits[b, confident, labels] += 6.0 + 5.0 * torch.rand(confident_count, generator=generator)
            blobs = _blobs(confident_count, size, generator)
            mask_logits[b, confident] = blobs + 0.3 * torch.randn(blobs.shape, generator=generator)
            # a quarter of the unsure queries shadow a confident blob, shifted and weaker
            shadows = unsure[: len(unsure) // 4]
            if len(shadows):
                source = torch.randint(0, confident_count, (len(shadows),), generator=generator)
                shifts = torch.randint(-3, 4, (len(shadows), 2), generator=generator).tolist()
                for query, blob, (dy, dx) in zip(shadows.tolist(), source.tolist(), shifts):
                    mask_logits[b, query] = 0.6 * blobs[blob].roll((dy, dx), dims=(0, 1)) - 2.0
    return class_logits, mask_logits
