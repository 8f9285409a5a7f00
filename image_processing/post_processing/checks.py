"""Checks of what every post-processing takes (model outputs, sizes, class ids, thresholds), with clear errors, and
the `segments_info` format of its results."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

Size = tuple[int, int]


def _check_tensor(name: str, value: Any, ndim: int, layout: str) -> None:
    """`value` must be a tensor of `ndim` dimensions (`layout` names them in the error)."""
    if not isinstance(value, Tensor) or value.ndim != ndim:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a {layout} tensor, got {got}")


def _check_outputs(class_queries_logits: Tensor, masks_queries_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes and return both logits as float32 (bf16/fp16 are upcast)."""
    _check_tensor("class_queries_logits", class_queries_logits, 3, "(batch, queries, classes + 1)")
    _check_tensor("masks_queries_logits", masks_queries_logits, 4, "(batch, queries, height, width)")
    if class_queries_logits.shape[:2] != masks_queries_logits.shape[:2]:
        raise ValueError(
            f"class_queries_logits {tuple(class_queries_logits.shape)} and masks_queries_logits "
            f"{tuple(masks_queries_logits.shape)} disagree on (batch, queries)"
        )
    if class_queries_logits.shape[-1] < 2:
        raise ValueError(f"class_queries_logits needs at least one class plus 'no object', got {class_queries_logits.shape[-1]}")
    if masks_queries_logits.shape[-1] == 0 or masks_queries_logits.shape[-2] == 0:
        raise ValueError(f"masks_queries_logits has an empty spatial size {tuple(masks_queries_logits.shape[-2:])}")
    if class_queries_logits.device != masks_queries_logits.device:
        raise ValueError(f"logits live on different devices: {class_queries_logits.device} and {masks_queries_logits.device}")
    return class_queries_logits.float(), masks_queries_logits.float()


def _to_size(name: str, size: Any) -> Size:
    """One `(height, width)` of positive integers (a sequence or a tensor)."""
    values = size.tolist() if isinstance(size, Tensor) else size
    try:
        height, width = (int(value) for value in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0 or (height, width) != tuple(values):
        raise ValueError(f"{name} must be two positive integers (height, width), got {tuple(values)}")
    return height, width


def _size_list(name: str, sizes: Any, count: int, what: str) -> list[Size]:
    """`count` sizes, one per `what` (named in errors), as `(height, width)` tuples."""
    if isinstance(sizes, Tensor):
        sizes = sizes.tolist()
    if sizes is None or len(sizes) != count:
        got = "None" if sizes is None else f"{len(sizes)} entries"
        raise ValueError(f"{name} needs one (height, width) per {what} ({count}), got {got}")
    return [_to_size(f"{name}[{index}]", size) for index, size in enumerate(sizes)]


def _input_size(input_size: Any, masks_queries_logits: Tensor) -> Size:
    """Defaults to 4x the mask logits, EoMT's mask resolution for patch size 16."""
    if input_size is None:
        return 4 * masks_queries_logits.shape[-2], 4 * masks_queries_logits.shape[-1]
    return _to_size("input_size", input_size)


def _valid_sizes(valid_sizes: Any, count: int, input_size: Size) -> list[Size]:
    """The unpadded top-left region of each input, within `input_size`; default the whole input."""
    if valid_sizes is None:
        return [input_size] * count
    sizes = _size_list("valid_sizes", valid_sizes, count, "image")
    for index, (height, width) in enumerate(sizes):
        if height > input_size[0] or width > input_size[1]:
            raise ValueError(f"valid_sizes[{index}] = {(height, width)} exceeds input_size {input_size}")
    return sizes


def _whole_images(
    class_queries_logits: Tensor, masks_queries_logits: Tensor, target_sizes: Any, input_size: Any, valid_sizes: Any
) -> tuple[Tensor, Tensor, Size, list[Size], list[Size]]:
    """Checked float32 logits, input size, target and valid sizes of outputs that hold one whole image each."""
    class_logits, mask_logits = _check_outputs(class_queries_logits, masks_queries_logits)
    input_size = _input_size(input_size, mask_logits)
    targets = _size_list("target_sizes", target_sizes, class_logits.shape[0], "image")
    return class_logits, mask_logits, input_size, targets, _valid_sizes(valid_sizes, class_logits.shape[0], input_size)


def _segments_info(ids: Tensor, label_ids: Tensor, scores: Tensor) -> list[dict[str, Any]]:
    """transformers' `segments_info`: scores rounded to 6 decimals (one device sync for all segments)."""
    return [
        {"id": segment_id, "label_id": label_id, "score": round(score, 6)}
        for segment_id, label_id, score in zip(ids.tolist(), label_ids.tolist(), scores.tolist())
    ]


def _class_id_tensor(name: str, class_ids: Sequence[int] | None, num_classes: int, device: torch.device) -> Tensor:
    """`class_ids` (None: none) as a long tensor on `device`, each checked to be one of the outputs' classes."""
    ids = torch.as_tensor(list(class_ids) if class_ids is not None else [], dtype=torch.long)
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.numel():
        raise ValueError(f"{name} contains {bad.tolist()}, outside the {num_classes} classes of the outputs (0..{num_classes - 1})")
    return ids.to(device)


def _check_thresholds(**thresholds: float) -> None:
    """Every threshold is a probability or an area ratio: a number in [0, 1]."""
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
