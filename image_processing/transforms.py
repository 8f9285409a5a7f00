"""Geometric primitives on numpy arrays shared by the image processor and the training augmentation.

Images are `(H, W, C)` arrays (uint8 or float32); label arrays (masks, id maps) are `(..., H, W)`. Images are resized
bilinearly and label arrays with nearest neighbour, both through PIL, so a mask and its image stay aligned exactly as
transformers' PIL image processors align them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    return max(1, round(height * factor)), max(1, round(width * factor))


def longest_side_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """`(h, w)` scaled so that the longer side is `longest`, both sides rounded (the authors' resize for panoptic and
    instance segmentation). transformers' `get_size_with_aspect_ratio` truncates instead, and for very elongated
    images (short side rounding to its old value) returns the size unchanged; we do not copy that."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return _scaled_size(height, width, longest / max(height, width))


def shortest_side_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """`(h, w)` scaled so that the shorter side is `shortest`, both sides rounded (the authors' resize before
    sliding windows for semantic segmentation)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return _scaled_size(height, width, shortest / min(height, width))


def _resize_plane(plane: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """One `(H, W)` plane through PIL (uint8 as "L", integers as "I", floats as "F")."""
    if plane.dtype == np.uint8 or plane.dtype == bool:
        resized = Image.fromarray(plane.astype(np.uint8, copy=False)).resize(size[::-1], resample)
        return np.asarray(resized).astype(plane.dtype, copy=False)
    if np.issubdtype(plane.dtype, np.integer):
        if plane.size and (plane.min() < np.iinfo(np.int32).min or plane.max() > np.iinfo(np.int32).max):
            raise ValueError(f"label values must fit in int32 to be resized, got range [{plane.min()}, {plane.max()}]")
        resized = Image.fromarray(plane.astype(np.int32)).resize(size[::-1], resample)
        return np.asarray(resized).astype(plane.dtype)
    resized = Image.fromarray(plane.astype(np.float32)).resize(size[::-1], resample)
    return np.asarray(resized).astype(plane.dtype, copy=False)


def resize_image(image: np.ndarray, size: tuple[int, int], resample: str = "bilinear") -> np.ndarray:
    """Resize an `(H, W, C)` image to `size = (h, w)`; uint8 channels are resized together as PIL does for RGB."""
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    if tuple(image.shape[:2]) == tuple(size):
        return image
    mode = _RESAMPLE[resample]
    if image.dtype == np.uint8 and image.shape[2] in (3, 4):
        pil_mode = "RGB" if image.shape[2] == 3 else "RGBA"
        return np.asarray(Image.fromarray(image, pil_mode).resize(size[::-1], mode))
    return np.stack([_resize_plane(image[..., c], size, mode) for c in range(image.shape[2])], axis=-1)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label array `(..., H, W)` (bool masks, class or segment ids) to `(..., h, w)`."""
    if labels.ndim < 2:
        raise ValueError(f"expected a (..., H, W) label array, got shape {labels.shape}")
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    planes = labels.reshape(-1, *labels.shape[-2:])
    out = np.empty((planes.shape[0], *size), dtype=labels.dtype)
    for index, plane in enumerate(planes):
        out[index] = _resize_plane(plane, size, Image.NEAREST)
    return out.reshape(*labels.shape[:-2], *size)


def pad_bottom_right(array: np.ndarray, size: tuple[int, int], value: float = 0, channels_last: bool = False) -> np.ndarray:
    """Pad the spatial dims (the last two, or the two before the channels when `channels_last`) at the bottom and
    right up to `size = (h, w)`; sides already at least that large are left as they are."""
    height_axis = array.ndim - (3 if channels_last else 2)
    height, width = array.shape[height_axis], array.shape[height_axis + 1]
    pad_h, pad_w = max(0, size[0] - height), max(0, size[1] - width)
    if pad_h == 0 and pad_w == 0:
        return array
    padding = [(0, 0)] * array.ndim
    padding[height_axis], padding[height_axis + 1] = (0, pad_h), (0, pad_w)
    return np.pad(array, padding, mode="constant", constant_values=value)


def crop(array: np.ndarray, top: int, left: int, height: int, width: int, channels_last: bool = False) -> np.ndarray:
    """The `height x width` window at (`top`, `left`) of the spatial dims (see `pad_bottom_right`)."""
    height_axis = array.ndim - (3 if channels_last else 2)
    index = [slice(None)] * array.ndim
    index[height_axis], index[height_axis + 1] = slice(top, top + height), slice(left, left + width)
    return array[tuple(index)]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(
    image: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD, scale: float = 1 / 255
) -> torch.Tensor:
    """`(H, W, C)` image to a float32 `(C, H, W)` tensor: `(image * scale - mean) / std`."""
    if image.ndim != 3 or image.shape[2] != len(mean):
        raise ValueError(f"expected an (H, W, {len(mean)}) image, got shape {image.shape}")
    # numpy, not torch: one pass to contiguous float32 (C, H, W), then in place. Same float32 operations in the same
    # order, but free of the intra-op thread start-up that makes small torch ops slow on busy CPUs.
    pixels = np.array(image.transpose(2, 0, 1), dtype=np.float32, order="C")
    pixels *= np.float32(scale)
    pixels -= np.asarray(mean, dtype=np.float32)[:, None, None]
    pixels /= np.asarray(std, dtype=np.float32)[:, None, None]
    return torch.from_numpy(pixels)


def sliding_windows(length: int, window: int) -> list[tuple[int, int]]:
    """`(start, end)` of the fewest windows of size `window` that cover `length` pixels, overlapping evenly: the
    authors' layout for semantic segmentation (`ceil(length / window)` windows, start `j * (length - window) / (n - 1)`
    rounded down). Computed in integers: the authors' float formula leaves the last pixel uncovered for some lengths
    (e.g. 4481 pixels, windows of 640)."""
    if window <= 0 or length < window:
        raise ValueError(f"cannot cover {length} pixels with windows of {window}: the length must be at least the window")
    count = math.ceil(length / window)
    starts = [index * (length - window) // (count - 1) if count > 1 else 0 for index in range(count)]
    return [(start, start + window) for start in starts]
