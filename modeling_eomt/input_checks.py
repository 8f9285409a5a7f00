"""The EoMT models' argument checks: each raises an error that names the argument and what it expects, before anything
is computed from it (pixel values, masked-attention probabilities, and the training targets of `loss_eomt`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .configuration_eomt import EoMTConfig


def check_pixel_values(pixel_values: Tensor | None, config: EoMTConfig) -> None:
    """Raise a `ValueError` that names the problem when `pixel_values` is not a `(B, C, H, W)` float batch."""
    if pixel_values is None:
        raise ValueError("pixel_values is required")
    if not isinstance(pixel_values, Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must have 4 dimensions (batch, channels, height, width), got shape {tuple(pixel_values.shape)}"
        )
    if pixel_values.shape[1] != config.num_channels:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[1]} channels (shape {tuple(pixel_values.shape)}), "
            f"the model expects {config.num_channels}"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values must be a floating-point tensor (normalised image), got {pixel_values.dtype}")
    height, width = pixel_values.shape[-2:]
    if height % config.patch_size or width % config.patch_size or height == 0 or width == 0:
        raise ValueError(
            f"pixel_values height and width must be positive multiples of patch_size={config.patch_size}, "
            f"got {height}x{width}; resize or pad the image (the image processor does this)"
        )


def check_attn_mask_probs(probs: float | Sequence[float] | Tensor, num_blocks: int) -> Tensor:
    """`probs` (one number, or one per masked block) as `num_blocks` float64 values on the CPU; a `TypeError` or
    `ValueError` that names the problem when they are not numbers in [0, 1] or not one per block."""
    try:
        values = torch.as_tensor(probs, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"attn_mask_probs must be a number or a sequence of numbers, got {probs!r}") from error
    if values.ndim == 0:
        values = values.expand(num_blocks)
    if values.shape != (num_blocks,):
        raise ValueError(
            f"attn_mask_probs needs one probability per masked block (num_blocks={num_blocks}) or a single number, "
            f"got {values.numel()} values of shape {tuple(values.shape)}"
        )
    if not bool(((values >= 0) & (values <= 1)).all()):
        raise ValueError(f"attn_mask_probs must lie in [0, 1], got {values.tolist()}")
    return values


def check_targets(
    mask_labels: Sequence[Tensor],
    class_labels: Sequence[Tensor],
    batch_size: int,
    num_labels: int,
    mask_logits_size: tuple[int, int],
) -> None:
    """Raise a `ValueError` naming the image and the problem when the targets do not fit the predictions."""
    for name, labels in (("mask_labels", mask_labels), ("class_labels", class_labels)):
        if not isinstance(labels, (list, tuple)):
            raise ValueError(f"{name} must be a list with one tensor per image, got {type(labels).__name__}")
        if len(labels) != batch_size:
            raise ValueError(f"{name} has {len(labels)} entries but the batch has {batch_size} images")
    target_size = None
    for index, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
        if not isinstance(masks, Tensor) or masks.ndim != 3:
            shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(f"mask_labels[{index}] must be a (num_masks, height, width) tensor, got {shape}")
        if not isinstance(classes, Tensor) or classes.ndim != 1:
            shape = tuple(classes.shape) if isinstance(classes, Tensor) else type(classes).__name__
            raise ValueError(f"class_labels[{index}] must be a (num_masks,) tensor, got {shape}")
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise ValueError(f"class_labels[{index}] must hold integer class indices, got dtype {classes.dtype}")
        if masks.shape[0] != classes.shape[0]:
            raise ValueError(
                f"image {index}: mask_labels has {masks.shape[0]} masks but class_labels has {classes.shape[0]} labels"
            )
        size = tuple(masks.shape[-2:])
        if target_size is None:
            target_size = size
        elif size != target_size:
            raise ValueError(
                f"image {index}: target masks are {size[0]}x{size[1]} but image 0's are {target_size[0]}x{target_size[1]}; "
                "all target masks must have the resolution of pixel_values"
            )
    if target_size is not None and target_size[0] * mask_logits_size[1] != target_size[1] * mask_logits_size[0]:
        raise ValueError(
            f"target masks are {target_size[0]}x{target_size[1]} but the predicted masks are "
            f"{mask_logits_size[0]}x{mask_logits_size[1]}: the aspect ratios differ; targets must have the resolution "
            "of pixel_values"
        )
    all_classes = torch.cat([classes.reshape(-1).long() for classes in class_labels]) if class_labels else None
    if all_classes is not None and all_classes.numel() > 0:
        low, high = all_classes.min().item(), all_classes.max().item()  # one synchronisation for the batch
        if low < 0 or high >= num_labels:
            for index, classes in enumerate(class_labels):
                bad = classes[(classes < 0) | (classes >= num_labels)]
                if bad.numel() > 0:
                    raise ValueError(
                        f"image {index}: class_labels {bad.tolist()} are outside [0, {num_labels}) "
                        f"(num_labels={num_labels}; the 'no object' class {num_labels} is not a valid target)"
                    )


def check_target_size(mask_labels: Sequence[Tensor], input_size: tuple[int, int]) -> None:
    """Raise a `ValueError` naming the image when its target masks are not `input_size` `(H, W)`, the size of
    `pixel_values` (other problems are `check_targets`')."""
    for index, masks in enumerate(mask_labels):
        if isinstance(masks, Tensor) and masks.ndim == 3 and tuple(masks.shape[-2:]) != tuple(input_size):
            raise ValueError(
                f"image {index}: mask_labels are {masks.shape[-2]}x{masks.shape[-1]} but pixel_values are "
                f"{input_size[0]}x{input_size[1]}: target masks must have the resolution of the model input"
            )
