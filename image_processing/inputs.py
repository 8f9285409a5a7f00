"""Whatever image a user has, as an RGB `(H, W, 3)` numpy array (and whatever label map, as an int64 `(H, W)` array:
`to_label_array`).

Accepted: file paths, PIL images (any mode; the EXIF orientation is applied), numpy arrays and torch tensors
(`(H, W)`, `(H, W, C)` or `(C, H, W)` with 1, 3 or 4 channels). Pixel values keep the 0-255 scale of 8-bit images:

- uint8 (and other integer arrays within 0-255, bool as 0/255): returned as uint8;
- 16-bit (uint16 arrays, PIL modes `I;16*` and `I`): divided by 257, returned as float32 in [0, 255];
- floating point: must lie in [0, 1] (the convention of `torchvision.transforms.ToTensor`); multiplied by 255 and
  returned as float32. A float image outside [0, 1] is an error, never silently rescaled.

Grayscale is repeated into three channels; transparency (RGBA, LA, palette or `L`/`RGB` with a transparent colour)
is composited on white, as transformers' `convert_to_rgb` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
LabelInput = Union[str, bytes, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_CHANNEL_COUNTS = (1, 3, 4)


def open_image(path: str | os.PathLike, source: str = "image") -> Image.Image:
    """Read an image file into memory; a missing or unreadable file is a `ValueError` naming `source` and the path."""
    if not os.path.isfile(path):
        raise ValueError(f"{source}: no image file at {str(path)!r}")
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{source}: cannot read {str(path)!r} as an image ({error})") from None


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def pil_to_rgb(image: Image.Image, source: str = "image") -> np.ndarray:
    """`(H, W, 3)` array of a PIL image after its EXIF orientation (uint8, or float32 in [0, 255] for 16 bits)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float32)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{source}: {image.mode} image values must be 16-bit (0-65535), got range "
                             f"[{values.min():g}, {values.max():g}]")
        return np.repeat((values / 257)[..., None], 3, axis=-1)
    if image.mode == "F":
        return array_to_rgb(np.asarray(image), "channels_last", source)
    if _has_transparency(image):
        return np.asarray(_composite_on_white(image))
    return np.asarray(image.convert("RGB"))


def _channels_last(array: np.ndarray, input_data_format: str | None, is_tensor: bool, source: str) -> np.ndarray:
    """`(H, W, C)` view of a 2-D or 3-D array; the channel axis is taken from `input_data_format` or inferred."""
    if array.ndim == 2:
        return array[..., None]
    if array.ndim != 3:
        raise ValueError(f"{source}: an image must have 2 or 3 dimensions, got shape {tuple(array.shape)}")
    layout = str(getattr(input_data_format, "value", input_data_format)) if input_data_format is not None else None
    if layout is None:
        first, last = array.shape[0] in _CHANNEL_COUNTS, array.shape[-1] in _CHANNEL_COUNTS
        if first and last:  # e.g. a 3x4x3 image: follow each library's convention
            layout = "channels_first" if is_tensor else "channels_last"
        elif first or last:
            layout = "channels_first" if first else "channels_last"
        else:
            raise ValueError(
                f"{source}: cannot tell the channel axis of shape {tuple(array.shape)} (expected 1, 3 or 4 channels "
                f"first or last); pass input_data_format='channels_first' or 'channels_last'"
            )
    if layout not in ("channels_first", "channels_last"):
        raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}")
    return np.moveaxis(array, 0, -1) if layout == "channels_first" else array


def _to_255_scale(array: np.ndarray, source: str) -> np.ndarray:
    """uint8 as it is; other dtypes to float32 on the 0-255 scale (see the module docstring)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.size == 0:
        return array.astype(np.float32)
    low, high = array.min(), array.max()
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 257
    if np.issubdtype(array.dtype, np.integer):
        if low < 0 or high > 255:
            raise ValueError(f"{source}: integer images must be 8-bit (0-255) or uint16, got {array.dtype} values in "
                             f"[{low}, {high}]")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{source}: the image contains NaN or infinite values")
        if low < 0 or high > 1:
            raise ValueError(f"{source}: floating-point images must be in [0, 1], got values in [{low:g}, {high:g}] "
                             f"(pass uint8 for 0-255 images)")
        return array.astype(np.float32) * 255
    raise ValueError(f"{source}: unsupported image dtype {array.dtype}")


def array_to_rgb(array: np.ndarray | torch.Tensor, input_data_format: str | None = None, source: str = "image") -> np.ndarray:
    """`(H, W, 3)` array of a numpy array or torch tensor (uint8, or float32 on the 0-255 scale)."""
    is_tensor = isinstance(array, torch.Tensor)
    if is_tensor:
        array = array.detach().cpu()
        array = (array.float() if array.dtype in (torch.bfloat16, torch.float16) else array).numpy()
    array = _channels_last(np.asarray(array), input_data_format, is_tensor, source)
    channels = array.shape[-1]
    if channels not in _CHANNEL_COUNTS:
        raise ValueError(f"{source}: expected 1, 3 or 4 channels, got {channels} (shape {array.shape})")
    array = _to_255_scale(array, source)
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 4:
        if array.dtype == np.uint8:
            return np.asarray(_composite_on_white(Image.fromarray(np.ascontiguousarray(array), "RGBA")))
        alpha = array[..., 3:] / 255
        return array[..., :3] * alpha + 255 * (1 - alpha)
    return array


def to_rgb_array(image: ImageInput, input_data_format: str | None = None, source: str = "image") -> np.ndarray:
    """One image of any accepted kind as an RGB `(H, W, 3)` array; an empty image is an error naming `source`."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, source)
    if isinstance(image, Image.Image):
        rgb = pil_to_rgb(image, source)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        rgb = array_to_rgb(image, input_data_format, source)
    else:
        raise TypeError(f"{source}: expected a file path, PIL image, numpy array or torch tensor, got "
                        f"{type(image).__name__}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{source}: the image is empty ({rgb.shape[0]}x{rgb.shape[1]} pixels)")
    return rgb


def as_image_list(images: ImageInput | Sequence[ImageInput], name: str = "images") -> list[ImageInput]:
    """A single image or a batch (list, tuple, or a 4-D array / tensor) as a non-empty list of images."""
    if isinstance(images, (list, tuple)):
        batch = list(images)
    elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        batch = list(images)
    else:
        batch = [images]
    if not batch:
        raise ValueError(f"{name} is empty: expected an image or a non-empty list of images")
    return batch


def to_label_array(annotation: LabelInput, source: str = "segmentation map", allow_rgb: bool = False) -> np.ndarray:
    """An annotation (path, PIL image, array, tensor) as an int64 label map `(H, W)`; with `allow_rgb`, an RGB(A)
    image (a COCO panoptic PNG) is returned as its `(H, W, 3)` colour channels. Non-integer values and other shapes are
    errors naming `source`."""
    if isinstance(annotation, (str, bytes)) or hasattr(annotation, "__fspath__"):
        annotation = open_image(annotation, source)
    if isinstance(annotation, Image.Image):
        if annotation.mode in ("RGB", "RGBA") and allow_rgb:
            annotation = annotation.convert("RGB")
        annotation = np.asarray(annotation)
    if isinstance(annotation, torch.Tensor):
        annotation = annotation.detach().cpu().numpy()
    array = np.asarray(annotation)
    if array.ndim == 3 and allow_rgb and array.shape[-1] in (3, 4):
        return array[..., :3]
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[:2] if array.shape[-1] == 1 else array.shape[1:])
    if array.ndim != 2:
        expected = "(H, W) or an RGB panoptic PNG (H, W, 3)" if allow_rgb else "(H, W)"
        raise ValueError(f"{source}: expected a label map {expected}, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{source}: label maps must hold integer ids, got non-integer {array.dtype} values")
    return array.astype(np.int64)
