"""The shared resize/pad/crop/normalise primitives (image_processing.transforms)."""

import numpy as np
import pytest
from PIL import Image

from image_processing.transforms import (
    crop,
    longest_side_size,
    normalize_image,
    pad_bottom_right,
    resize_image,
    resize_labels,
    shortest_side_size,
)


@pytest.mark.parametrize("size, longest, expected", [((480, 640), 640, (480, 640)), ((100, 40), 64, (64, 26)), ((1, 43), 64, (1, 64))])
def test_longest_side_size(size, longest, expected):
    assert longest_side_size(*size, longest) == expected
    assert max(expected) == longest


def test_shortest_side_size_and_bad_size():
    assert shortest_side_size(300, 1000, 512) == (512, 1707)
    with pytest.raises(ValueError, match="must be positive"):
        shortest_side_size(0, 10, 5)


def test_resize_matches_pil_and_keeps_labels_aligned():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((100, 60), Image.BILINEAR))
    assert np.array_equal(resize_image(image, (60, 100)), expected)
    ids = rng.integers(0, 70000, (30, 50))
    resized = resize_labels(ids, (45, 20))
    assert set(np.unique(resized)) <= set(np.unique(ids))  # nearest: no new values
    masks = ids[None] == np.unique(ids)[:3, None, None]
    assert np.array_equal(resize_labels(masks, (45, 20)), resized[None] == np.unique(ids)[:3, None, None])


def test_pad_and_crop():
    image = np.ones((3, 4, 3), np.uint8)
    padded = pad_bottom_right(image, (5, 6), channels_last=True)
    assert padded.shape == (5, 6, 3) and padded[3:].sum() == 0 and padded[:3, :4].all()
    masks = np.ones((2, 3, 4), bool)
    assert pad_bottom_right(masks, (2, 2)).shape == (2, 3, 4)  # never shrinks
    assert crop(padded, 1, 2, 3, 3, channels_last=True).shape == (3, 3, 3)


def test_normalize_image():
    import torch

    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255
    pixels = normalize_image(image)
    assert pixels.shape == (3, 2, 3) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0], torch.full((2, 3), (1 - 0.485) / 0.229))
    torch.testing.assert_close(pixels[2], torch.full((2, 3), -0.406 / 0.225))
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) image"):
        normalize_image(np.zeros((2, 3), np.uint8))
