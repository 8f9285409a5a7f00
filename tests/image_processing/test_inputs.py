"""Every kind of image a user may pass becomes the RGB array they expect, every kind of label map an int64 map
(image_processing.inputs)."""

import numpy as np
import pytest
import torch
from PIL import Image

from image_processing.inputs import as_image_list, to_label_array, to_rgb_array

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (5, 7), dtype=np.uint8)


def test_rgb_and_grayscale_modes():
    assert np.array_equal(to_rgb_array(Image.fromarray(RGB)), RGB)
    assert np.array_equal(to_rgb_array(Image.fromarray(GRAY, "L")), np.repeat(GRAY[..., None], 3, axis=-1))
    binary = Image.fromarray(GRAY > 128).convert("1")
    assert np.array_equal(to_rgb_array(binary)[..., 0], np.where(GRAY > 128, 255, 0))
    cmyk = Image.fromarray(RGB).convert("CMYK")
    assert np.abs(to_rgb_array(cmyk).astype(int) - RGB).max() <= 1


def test_palette_image_uses_its_colours():
    palette_image = Image.fromarray(GRAY % 4, "P")
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * 756)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    assert np.array_equal(to_rgb_array(palette_image), colours[GRAY % 4])
    palette_image.info["transparency"] = 1  # palette index 1 transparent -> white
    expected = colours[GRAY % 4].copy()
    expected[GRAY % 4 == 1] = 255
    assert np.array_equal(to_rgb_array(palette_image), expected)


@pytest.mark.parametrize("kind", ["pil-rgba", "pil-la", "numpy-rgba", "numpy-float-rgba"])
def test_alpha_is_composited_on_white(kind):
    alpha = np.zeros((5, 7), np.uint8)
    alpha[:, :3] = 255  # left opaque, right transparent
    if kind == "pil-la":
        image, opaque = Image.fromarray(np.stack([GRAY, alpha], -1), "LA"), np.repeat(GRAY[..., None], 3, -1)
    else:
        rgba = np.concatenate([RGB, alpha[..., None]], axis=-1)
        image = Image.fromarray(rgba, "RGBA") if kind == "pil-rgba" else rgba
        image = image.astype(np.float32) / 255 if kind == "numpy-float-rgba" else image
        opaque = RGB
    rgb = to_rgb_array(image)
    np.testing.assert_allclose(rgb[:, :3], opaque[:, :3], atol=1e-3)
    np.testing.assert_allclose(rgb[:, 3:], 255, atol=1e-3)


def test_sixteen_bit_images_keep_their_precision():
    values = np.array([[0, 257, 65535], [1000, 30000, 60000]], np.uint16)
    expected = np.repeat((values / 257).astype(np.float32)[..., None], 3, -1)
    pil16 = Image.fromarray(values)
    np.testing.assert_allclose(to_rgb_array(pil16), expected, rtol=1e-6)
    np.testing.assert_allclose(to_rgb_array(values), expected, rtol=1e-6)
    np.testing.assert_allclose(to_rgb_array(pil16.convert("I")), expected, rtol=1e-6)


def test_png_files_of_every_mode_round_trip(tmp_path):
    for mode, image in [("L", Image.fromarray(GRAY)), ("RGBA", Image.fromarray(np.dstack([RGB, np.full((5, 7), 255, np.uint8)]))),
                        ("I;16", Image.fromarray(GRAY.astype(np.uint16) * 257))]:
        path = tmp_path / f"{mode.replace(';', '')}.png"
        image.save(path)
        expected = to_rgb_array(image)
        np.testing.assert_allclose(to_rgb_array(str(path)), expected, atol=1e-4)
        np.testing.assert_allclose(to_rgb_array(path), expected, atol=1e-4)


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:10, :20] = (255, 0, 0)  # red square at the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image).save(path, exif=exif, quality=95)
    rgb = to_rgb_array(str(path))
    assert rgb.shape == (40, 20, 3)  # displayed portrait
    assert rgb[2:8, 12:18, 0].min() > 200 and rgb[2:8, 12:18, 1].max() < 60  # red now at the top-right
    assert rgb[30:, :, 0].max() < 60


@pytest.mark.parametrize("layout", ["hwc", "chw"])
@pytest.mark.parametrize("kind", ["numpy-uint8", "numpy-float", "torch-uint8", "torch-float", "torch-half"])
def test_arrays_and_tensors_in_both_layouts(kind, layout):
    array = RGB if layout == "hwc" else RGB.transpose(2, 0, 1)
    if "float" in kind or "half" in kind:
        array = array.astype(np.float32) / 255
    image = torch.from_numpy(np.ascontiguousarray(array)) if kind.startswith("torch") else array
    image = image.half() if kind == "torch-half" else image
    rgb = to_rgb_array(image)
    assert rgb.shape == (5, 7, 3)
    np.testing.assert_allclose(rgb, RGB, atol=0.2 if kind == "torch-half" else 1e-3)


def test_ambiguous_layout_follows_convention_or_explicit_format():
    square = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)  # could be CHW (3x4x3) or HWC (3x4, 3 channels)
    assert to_rgb_array(square).shape == (3, 4, 3)  # numpy: channels last
    assert to_rgb_array(torch.from_numpy(square)).shape == (4, 3, 3)  # torch: channels first
    assert np.array_equal(to_rgb_array(square, input_data_format="channels_first"), square.transpose(1, 2, 0))


def test_batches():
    assert len(as_image_list(np.zeros((2, 5, 7, 3), np.uint8))) == 2
    assert len(as_image_list(torch.zeros(3, 3, 5, 7))) == 3
    assert len(as_image_list(RGB)) == 1 and len(as_image_list([RGB, GRAY])) == 2
    with pytest.raises(ValueError, match="images is empty"):
        as_image_list([])


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 5, 3), np.uint8), r"images\[3\]: the image is empty \(0x5 pixels\)"),
        (np.full((4, 4, 3), 2.0, np.float32), r"floating-point images must be in \[0, 1\], got values in \[2, 2\]"),
        (np.full((4, 4), np.nan, np.float32), "NaN or infinite"),
        (np.zeros((4, 4, 3), np.int32) - 1, "integer images must be 8-bit"),
        (np.zeros((5, 6, 7), np.uint8), r"cannot tell the channel axis of shape \(5, 6, 7\)"),
        (np.zeros((2, 5, 6, 7), np.uint8), r"must have 2 or 3 dimensions"),
        ("not an image", "TypeError"),
    ],
)
def test_bad_images_name_the_item_and_problem(image, message):
    if message == "TypeError":
        with pytest.raises(TypeError, match=r"images\[3\]: expected a file path, PIL image"):
            to_rgb_array(3.5, source="images[3]")
        return
    with pytest.raises(ValueError, match=message):
        to_rgb_array(image, source="images[3]")


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(ValueError, match=r"images\[0\]: no image file at '.*missing\.png'"):
        to_rgb_array(str(tmp_path / "missing.png"), source="images[0]")
    text = tmp_path / "notes.png"
    text.write_text("this is not a PNG")
    with pytest.raises(ValueError, match=r"images\[0\]: cannot read '.*notes\.png' as an image"):
        to_rgb_array(text, source="images[0]")


def test_every_kind_of_label_map_becomes_int64(tmp_path):
    labels = RNG.integers(0, 200, (5, 7)).astype(np.uint8)
    Image.fromarray(labels, "L").save(tmp_path / "labels.png")
    for annotation in (tmp_path / "labels.png", str(tmp_path / "labels.png"), Image.fromarray(labels, "L"), labels,
                       torch.from_numpy(labels), labels[None], labels[..., None], labels.astype(np.float32)):
        array = to_label_array(annotation)
        assert array.dtype == np.int64 and np.array_equal(array, labels)
    assert to_label_array(labels > 100).tolist() == (labels > 100).astype(int).tolist()
    rgb = Image.fromarray(RGB).convert("RGBA")  # a panoptic PNG: its colours, only with allow_rgb
    assert np.array_equal(to_label_array(rgb, allow_rgb=True), RGB)
    assert np.array_equal(to_label_array(np.dstack([RGB, GRAY]), allow_rgb=True), RGB)


def test_bad_label_maps_name_the_source_and_problem(tmp_path):
    with pytest.raises(ValueError, match=r"maps\[1\]: expected a label map \(H, W\), got shape \(5, 7, 3\)"):
        to_label_array(RGB, "maps[1]")
    with pytest.raises(ValueError, match=r"an RGB panoptic PNG \(H, W, 3\), got shape \(2, 5, 7, 3\)"):
        to_label_array(np.stack([RGB, RGB]), "maps[1]", allow_rgb=True)
    with pytest.raises(ValueError, match=r"maps\[1\]: label maps must hold integer ids, got non-integer float64"):
        to_label_array(np.full((2, 2), 0.5), "maps[1]")
    with pytest.raises(ValueError, match=r"maps\[1\]: no image file at '.*missing\.png'"):
        to_label_array(tmp_path / "missing.png", "maps[1]")
