"""`training.prediction_inputs`: the lazy walk of files, folders and patterns, names, `datasets` rows, and decoding of
every image mode (and of files that cannot be decoded: each a one-line `ValueError` naming the file)."""

import io
import struct
import zlib

import datasets
import numpy as np
import pytest
from PIL import Image

from training.prediction_inputs import (
    DatasetInput,
    ImageItem,
    file_items,
    iter_dataset_images,
    iter_images,
    processor_input,
    read_image,
    safe_name,
)


def names(items) -> list[str]:
    return sorted(item.name for item in items)


def test_iter_images_walks_folders_and_patterns(tmp_path, monkeypatch):
    for name in ("b.png", "a.JPG", "c.txt", "sub/d.png", "sub/deeper/e.webp", "empty/.keep"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert names(iter_images(["."])) == ["a", "b"]  # images only, not recursive
    assert names(iter_images(["."], recursive=True)) == ["a", "b", "sub/d", "sub/deeper/e"]  # folders kept in names
    assert names(iter_images([str(tmp_path / "sub")], recursive=True)) == ["d", "deeper/e"]  # relative to the input
    assert names(iter_images(["*.png", "sub/*"])) == ["b", "d", "deeper/e"]  # a matched folder gives its images
    assert names(iter_images(["**/*.png"], recursive=True)) == ["b", "sub/d"]
    assert names(iter_images(["c.txt", "sub/d.png"])) == ["c", "d"]  # a file named explicitly is read (and may fail) later
    items = list(iter_images(["b.png", "./b.png"]))
    assert [item.name for item in items] == ["b", "b"] and items[0].identity == items[1].identity == str(tmp_path / "b.png")
    assert items[1].source == "./b.png"  # messages name the file as the user gave it
    problems = []
    assert names(iter_images(["empty", "missing.png", "*.gif", "b.png"], report=problems.append)) == ["b"]
    assert problems == [
        "empty: no image files in this directory (see --recursive)",
        "missing.png: no such file or directory",
        "*.gif: no image file matches this pattern",
    ]


def test_iter_images_is_lazy(tmp_path):
    """The walk yields the first image before it lists the rest: a generator over the folder, not a list."""
    for index in range(5):
        (tmp_path / f"{index}.png").write_bytes(b"")
    walk = iter_images([str(tmp_path)])
    first = next(walk)
    for index in range(5, 8):  # files made after the walk started may or may not be met, but nothing breaks
        (tmp_path / f"{index}.png").write_bytes(b"")
    rest = list(walk)
    assert first.name not in {item.name for item in rest} and len(rest) >= 4


def test_names_never_leave_the_output_folder():
    assert safe_name("../../etc/passwd") == "_/_/etc/passwd"
    assert safe_name("/abs//x\\y/./z") == "abs/x/y/z"
    assert safe_name("") == "_"
    assert [item.name for item in file_items(["x/1.png", "y/2.tar.png"])] == ["1", "2.tar"]


def test_dataset_rows_are_streamed_named_and_decoded(tmp_path):
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (8 + index, 10, 3), dtype=np.uint8) for index in range(3)]
    rows = datasets.Dataset.from_dict({
        "picture": [Image.fromarray(picture) for picture in pictures],
        "file": ["000000000139.jpg", "sub/x.png", "../up"],
    }).cast_column("picture", datasets.Image())  # fmt: skip
    rows.save_to_disk(tmp_path / "disk")
    rows.to_parquet(str(tmp_path / "parquet" / "data.parquet"))
    spec = DatasetInput(str(tmp_path / "disk"), image_column="picture")
    items = list(iter_dataset_images(spec))
    assert [item.name for item in items] == ["00000000", "00000001", "00000002"]  # row numbers by default
    assert items[0].identity != items[1].identity and "row 1" in items[1].source
    for item, picture in zip(items, pictures, strict=True):
        np.testing.assert_array_equal(read_image(item), picture)  # PNG bytes decoded here, not by datasets
    named = DatasetInput(str(tmp_path / "parquet"), split="train", image_column="picture", name_column="file")
    items = list(iter_dataset_images(named))  # load_dataset(..., streaming=True)
    assert [item.name for item in items] == ["000000000139", "sub/x", "_/up"]
    np.testing.assert_array_equal(read_image(items[2]), pictures[2])
    with pytest.raises(ValueError, match="no column 'image'; its columns are"):
        next(iter_dataset_images(DatasetInput(str(tmp_path / "disk"))))
    with pytest.raises(ValueError, match=r"parquet: .*test.*\['train'\]"):
        next(iter_dataset_images(DatasetInput(str(tmp_path / "parquet"), split="test", image_column="picture")))


# ----------------------------------------------------------------------------------------------------------------------
# Decoding every mode
# ----------------------------------------------------------------------------------------------------------------------


def mode_images(size=(20, 24)) -> dict[str, tuple[Image.Image, str, np.ndarray]]:
    """mode -> (image in that mode, file format, the RGB it shows on the 0-255 scale, computed without PIL's
    conversions)."""
    rng = np.random.default_rng(1)
    height, width = size
    gray = rng.integers(0, 256, size, dtype=np.uint8)
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    gray3 = np.repeat(gray[..., None], 3, -1).astype(np.float32)
    alpha = np.zeros(size, dtype=np.uint8)
    alpha[:, : width // 2] = 255  # left opaque, right transparent (composited on white)
    composited = gray3.copy()
    composited[:, width // 2 :] = 255
    palette_indices = rng.integers(0, 4, size, dtype=np.uint8)
    colours = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 0], [90, 90, 90]], dtype=np.uint8)
    palette = Image.fromarray(palette_indices, "P")
    palette.putpalette(colours.ravel().tolist())
    palette.info["transparency"] = 0
    palette_rgb = colours[palette_indices].astype(np.float32)
    palette_rgb[palette_indices == 0] = 255
    bits = rng.integers(0, 2, size).astype(bool)
    return {
        "I;16": (Image.fromarray(gray.astype(np.uint16) * 257), "PNG", gray3),
        "I": (Image.fromarray(gray.astype(np.int32) * 257, "I"), "TIFF", gray3),
        "F": (Image.fromarray(gray.astype(np.float32) / 255, "F"), "TIFF", gray3),
        "LA": (Image.fromarray(np.stack([gray, alpha], -1), "LA"), "PNG", composited),
        "P": (palette, "PNG", palette_rgb),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), "TIFF", rgb.astype(np.float32)),
        "1": (Image.fromarray(bits).convert("1"), "PNG", np.repeat(bits[..., None], 3, -1) * np.float32(255)),
    }


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "LA", "P", "CMYK", "1"])
def test_every_mode_is_decoded_to_the_rgb_it_shows(tmp_path, mode):
    image, file_format, expected = mode_images()[mode]
    path = tmp_path / f"image.{file_format.lower()}"
    image.save(path, format=file_format)
    assert Image.open(path).mode == mode  # the file really is in that mode
    rgb = read_image(next(file_items([path])))
    assert rgb.shape == expected.shape
    np.testing.assert_allclose(rgb, expected, atol=1e-3)
    pixels = processor_input(rgb)  # what the processor gets: uint8, or floats in [0, 1]
    assert pixels.dtype == np.uint8 or (pixels.dtype == np.float32 and 0 <= pixels.min() and pixels.max() <= 1)
    np.testing.assert_allclose(pixels.astype(np.float32) / (255 if pixels.dtype == np.uint8 else 1), expected / 255, atol=1e-5)


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width` x `height` grayscale pixels, with almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_undecodable_files_are_one_line_errors_naming_the_file(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, format="PNG")
    files = {
        "bomb.png": png_claiming_size(100_000, 100_000),
        "truncated.png": good.getvalue()[: len(good.getvalue()) // 2],
        "text.png": b"not an image",
        "empty.png": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    float_out_of_range = tmp_path / "float.tiff"
    Image.fromarray(np.full((4, 4), 7.5, dtype=np.float32), "F").save(float_out_of_range)
    for path in [*(tmp_path / name for name in files), float_out_of_range, tmp_path / "missing.png"]:
        with pytest.raises(ValueError) as raised:
            read_image(next(file_items([path])))
        message = str(raised.value)
        assert message.startswith(str(path)) and "\n" not in message, message
    with pytest.raises(ValueError, match="decompression bomb"):
        read_image(next(file_items([tmp_path / "bomb.png"])))


def test_dataset_image_values_of_every_kind(tmp_path):
    picture = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(picture).save(encoded, format="PNG")
    Image.fromarray(picture).save(tmp_path / "file.png")
    for value in ({"bytes": encoded.getvalue(), "path": None}, {"bytes": None, "path": str(tmp_path / "file.png")},
                  Image.fromarray(picture), picture):  # fmt: skip
        np.testing.assert_array_equal(read_image(ImageItem("x", "row 0", "d#0", value)), picture)
    with pytest.raises(ValueError, match=r"^row 5: "):
        read_image(ImageItem("x", "row 5", "d#5", {"bytes": b"junk", "path": None}))
