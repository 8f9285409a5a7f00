"""The authors' training augmentation, in numpy/PIL (facts from `datasets/transforms.py` of the reference code).

Order, per sample: drop crowd segments; colour jitter; random horizontal flip; large-scale jitter (resize so the
image fits the input size, times a scale drawn from `scale_range`); pad bottom/right to the input size; random crop
to the input size; drop masks left empty. If no mask survives, start again with new draws.

Colour jitter, as torchvision computes it on uint8 images: brightness (multiply by a factor in
`1 +- brightness_delta / 255`), then in random order either contrast then saturation+hue or saturation+hue then
contrast; contrast and saturation factors in `1 +- 0.5`, hue shift in `+- hue_delta` degrees; each with probability
0.5. The authors enable it for ADE20K and Cityscapes (scale range 0.5-2.0) but not for COCO (0.1-2.0);
`recipe_augmentation` returns those settings.

All random draws come from one `numpy.random.Generator` per sample made by `sample_rng(seed, epoch, index)`, so a
sample's augmentation does not depend on the number of DataLoader workers or on which worker decodes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from image_processing.targets import MaskTarget
from image_processing.transforms import crop, pad_bottom_right, resize_image, resize_labels

_GRAY_WEIGHTS = np.array([0.2989, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as torchvision


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation settings.

    Args:
        input_size: `(height, width)` of the training crops (an int for a square).
        scale_range: large-scale jitter range, relative to the scale at which the image fits `input_size`.
        horizontal_flip: flip with probability 0.5.
        color_jitter: apply the colour jitter below.
        brightness_delta: brightness factor drawn from `1 +- brightness_delta / 255`.
        contrast: contrast factor drawn from `1 +- contrast`.
        saturation: saturation factor drawn from `1 +- saturation`.
        hue_delta: hue shift drawn from `+- hue_delta` degrees.
        max_attempts: how often to redraw when every mask was cropped away; after that the sample has no masks.
    """

    input_size: int | tuple[int, int] = 640
    scale_range: tuple[float, float] = (0.1, 2.0)
    horizontal_flip: bool = True
    color_jitter: bool = True
    brightness_delta: float = 32.0
    contrast: float = 0.5
    saturation: float = 0.5
    hue_delta: float = 18.0
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.input_size, int):
            object.__setattr__(self, "input_size", (self.input_size, self.input_size))
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if min(self.input_size) <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")


def recipe_augmentation(task: str, input_size: int | tuple[int, int]) -> AugmentationConfig:
    """The authors' settings per task: COCO panoptic/instance scale 0.1-2.0 without colour jitter, semantic (ADE20K,
    Cityscapes) scale 0.5-2.0 with colour jitter."""
    if task == "semantic":
        return AugmentationConfig(input_size=input_size, scale_range=(0.5, 2.0), color_jitter=True)
    return AugmentationConfig(input_size=input_size, scale_range=(0.1, 2.0), color_jitter=False)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's random draws, a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


# Colour operations on (H, W, 3) uint8 images. Results are truncated to uint8 after each operation, as torchvision's
# uint8 kernels do.


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _blend(image: np.ndarray, other: np.ndarray | float, ratio: float) -> np.ndarray:
    return _to_uint8(image.astype(np.float32) * ratio + np.float32(other) * (1 - ratio))


def _gray(image: np.ndarray) -> np.ndarray:
    """Floored luma `(H, W)`, as torchvision's grayscale of a uint8 image."""
    return np.floor(image.astype(np.float32) @ _GRAY_WEIGHTS)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Multiply all channels by `factor`."""
    return _to_uint8(image.astype(np.float32) * np.float32(factor))


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's mean grey level: 0 gives a flat grey image, 1 the image itself."""
    return _blend(image, _gray(image).mean(), factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's grey version: 0 gives greys, 1 the image itself."""
    return _blend(image, _gray(image)[..., None], factor)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the HSV hue by `shift` turns (in [-0.5, 0.5]); saturation and value stay."""
    red, green, blue = image.transpose(2, 0, 1).astype(np.float32)  # (H, W) planes in 0..255
    value = np.maximum(np.maximum(red, green), blue)
    chroma = value - np.minimum(np.minimum(red, green), blue)
    inverse = 1 / np.maximum(chroma, 1)  # chroma is 0 (grey) or >= 1 on uint8 input
    hue = np.where(  # in sextants: 0 red, 2 green, 4 blue
        value == red,
        (green - blue) * inverse,
        np.where(value == green, (blue - red) * inverse + 2, (red - green) * inverse + 4),
    )
    hue = np.remainder(hue + np.float32(6 * shift), 6)
    # back to RGB: channel n in (5, 3, 1) for (R, G, B) is value - chroma * clip(min(k, 4 - k), 0, 1) with
    # k = (n + hue) % 6, scaled by 255.999 / 255 and truncated, as torchvision converts [0, 1] floats to uint8
    value *= np.float32(255.999 / 255)
    chroma *= np.float32(255.999 / 255)
    out = np.empty(image.shape, np.uint8)
    k = np.empty_like(hue)
    for channel, n in enumerate((5, 3, 1)):
        np.add(hue, n, out=k)
        np.subtract(k, 6, out=k, where=k >= 6)
        out[..., channel] = value - chroma * np.clip(np.minimum(k, 4 - k), 0, 1)  # in [0, 255.999): truncates
    return out


def color_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentationConfig) -> np.ndarray:
    """The authors' colour jitter: brightness, then contrast and saturation+hue in random order (each op p=0.5)."""

    def maybe(op, low: float, high: float, pixels: np.ndarray) -> np.ndarray:
        return op(pixels, rng.uniform(low, high)) if rng.random() < 0.5 else pixels

    def contrast(pixels: np.ndarray) -> np.ndarray:
        return maybe(adjust_contrast, 1 - config.contrast, 1 + config.contrast, pixels)

    def saturation_and_hue(pixels: np.ndarray) -> np.ndarray:
        pixels = maybe(adjust_saturation, 1 - config.saturation, 1 + config.saturation, pixels)
        return maybe(adjust_hue, -config.hue_delta / 360, config.hue_delta / 360, pixels)

    delta = config.brightness_delta / 255
    image = maybe(adjust_brightness, 1 - delta, 1 + delta, image)
    if rng.random() < 0.5:
        return saturation_and_hue(contrast(image))
    return contrast(saturation_and_hue(image))


# Geometry. Masks travel packed 8 per uint8 plane (bit i of plane j is mask 8j + i): flip, nearest-neighbour resize,
# pad and crop move whole pixels, so they act on every bit alike and on 8x less data.


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """`(n, H, W)` bool -> `(ceil(n / 8), H, W)` uint8 (plane by plane: ~8x faster than `np.packbits` on axis 0)."""
    packed = np.zeros(((len(masks) + 7) // 8, *masks.shape[1:]), np.uint8)
    for index, mask in enumerate(masks):
        plane = packed[index >> 3]
        np.bitwise_or(plane, np.left_shift(mask.view(np.uint8), index & 7), out=plane)
    return packed


def unpack_masks(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of `pack_masks`: `(count, H, W)` bool."""
    masks = np.empty((count, *packed.shape[1:]), bool)
    for index in range(count):
        np.bitwise_and(packed[index >> 3] >> (index & 7), 1, out=masks[index].view(np.uint8))
    return masks


def scale_jitter_size(height: int, width: int, input_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """Size after large-scale jitter: the scale at which `(height, width)` fits `input_size`, times `scale`, sides
    truncated to integers (at least 1)."""
    ratio = min(input_size[0] / height, input_size[1] / width) * scale
    return max(1, int(height * ratio)), max(1, int(width * ratio))


def _augment_once(image: np.ndarray, packed: np.ndarray, count: int, labels: np.ndarray, rng: np.random.Generator,
                  config: AugmentationConfig) -> tuple[np.ndarray, MaskTarget]:  # fmt: skip
    if config.color_jitter:
        image = color_jitter(image, rng, config)
    if config.horizontal_flip and rng.random() < 0.5:
        image, packed = image[:, ::-1], packed[:, :, ::-1]
    size = scale_jitter_size(image.shape[0], image.shape[1], config.input_size, rng.uniform(*config.scale_range))
    image = resize_image(np.ascontiguousarray(image), size)
    packed = resize_labels(np.ascontiguousarray(packed), size)
    image = pad_bottom_right(image, config.input_size, 0, channels_last=True)
    packed = pad_bottom_right(packed, config.input_size, 0)
    crop_h, crop_w = config.input_size
    top = int(rng.integers(0, image.shape[0] - crop_h + 1))
    left = int(rng.integers(0, image.shape[1] - crop_w + 1))
    image = crop(image, top, left, crop_h, crop_w, channels_last=True)
    masks = unpack_masks(crop(packed, top, left, crop_h, crop_w), count)
    return np.ascontiguousarray(image), MaskTarget(masks, labels, np.zeros(count, bool))


def augment(
    image: np.ndarray, target: MaskTarget, rng: np.random.Generator, config: AugmentationConfig
) -> tuple[np.ndarray, MaskTarget]:
    """One training view of `image` `(H, W, 3)` uint8 and `target`: `(input_h, input_w, 3)` uint8 and the non-crowd
    masks that are not empty after the crop, `(n, input_h, input_w)`. Redraws (up to `config.max_attempts` times)
    while no mask survives."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if target.size != tuple(image.shape[:2]):
        raise ValueError(f"target masks are {target.size} but the image is {tuple(image.shape[:2])}")
    target = target.select(~target.is_crowd)
    packed = pack_masks(target.masks)
    for _ in range(max(1, config.max_attempts)):
        view, view_target = _augment_once(image, packed, len(target), target.labels, rng, config)
        view_target = view_target.non_empty()
        if len(view_target) or not len(target):
            break
    return view, view_target
