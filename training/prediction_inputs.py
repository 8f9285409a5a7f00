"""What `eomt predict` segments: image files, folders and glob patterns walked lazily, or the rows of a `datasets`
split streamed; each image named for its output files, and decoded so that no input can stop the run.

Names: an image's name is its path relative to the input that found it, without the extension, with `/` between
folders: the stem for a file given by itself, `sub/b` for `DIR/sub/b.png` found in `DIR` (`--recursive`), and for a
glob match the path relative to the pattern's leading folders without wildcards (`imgs/*/a.png` names `x/a` for
`imgs/x/a.png`). A data set row is named by its `name_column` (a file name loses its extension) or by its position
(`00000042`). Two different images with the same name get `~2`, `~3`, ... after the name, in the order they are met.
"""

from __future__ import annotations

import glob
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from image_processing.inputs import open_image, pil_to_rgb, to_rgb_array

IMAGE_EXTENSIONS = frozenset(ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (its type name if it has none)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


@dataclass(frozen=True)
class ImageItem:
    """One image to segment.

    `name` is its output name (see the module docstring); `source` what messages call it (the path as given, or the
    data set row); `identity` what makes two items the same image (the resolved path, or data set, split and row);
    `data` what `read_image` decodes (a path, `{"bytes", "path"}` of a `datasets.Image` column, a PIL image or an
    array)."""

    name: str
    source: str
    identity: str
    data: Any


# ----------------------------------------------------------------------------------------------------------------------
# Files, folders, glob patterns
# ----------------------------------------------------------------------------------------------------------------------


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def safe_name(text: str) -> str:
    """`text` as a relative `/`-separated output name: empty and `.` parts dropped, `..` replaced by `_`, so that no
    name (from a data set column, say) writes outside the output folder."""
    parts = [("_" if part == ".." else part) for part in re.split(r"[\\/]+", text) if part not in ("", ".")]
    return "/".join(parts) or "_"


def _name_in(path: str, root: str) -> str:
    """`path` relative to `root`, without its extension."""
    return safe_name(str(PurePosixPath(Path(os.path.relpath(path, root)).as_posix()).with_suffix("")))


def _file_item(path: str, root: str) -> ImageItem:
    return ImageItem(_name_in(path, root), path, os.path.realpath(path), path)


def _walk(directory: str, recursive: bool) -> Iterator[str]:
    """The image files in `directory` (and below it with `recursive`), as the file system lists them, one folder
    listing open at a time; links to folders are not followed."""
    pending = [directory]
    while pending:
        folder = pending.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue  # a folder that vanished or cannot be listed: its images are not found
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        pending.append(entry.path)
                elif is_image_name(entry.name) and entry.is_file():
                    yield entry.path


def _pattern_root(pattern: str) -> str:
    """The leading folders of a glob pattern before its first wildcard (`.` if it starts with one)."""
    parts = Path(pattern).parts
    literal = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        literal.append(part)
    return str(Path(*literal)) if literal else "."


def input_problem(item: str) -> str | None:
    """Why the input `item` (a file, folder or glob pattern) names nothing at all, or None."""
    if os.path.exists(item) or glob.has_magic(item):
        return None
    return f"{item}: no such file or directory"


def iter_images(
    inputs: Sequence[str], recursive: bool = False, report: Callable[[str], None] | None = None
) -> Iterator[ImageItem]:
    """The images named by `inputs`, lazily: never more than one folder listing in memory.

    Files are taken as given (an unreadable one fails when it is read); folders give the files with an image extension
    inside them (sub-folders with `recursive`); glob patterns (`*`, `?`, `[...]`; `**` with `recursive`) give the
    matching image files and the images of matching folders. `report` receives one message per input that names no
    image (a missing path, an empty folder, a pattern matching nothing), when its walk ends."""
    for item in inputs:
        found = 0
        if os.path.isdir(item):
            for path in _walk(item, recursive):
                found += 1
                yield _file_item(path, item)
            problem = f"{item}: no image files in this directory{'' if recursive else ' (see --recursive)'}"
        elif os.path.isfile(item):
            found += 1
            yield _file_item(item, os.path.dirname(item) or ".")
        elif glob.has_magic(item):
            root = _pattern_root(item)
            for match in glob.iglob(item, recursive=recursive):
                if os.path.isdir(match):
                    for path in _walk(match, recursive):
                        found += 1
                        yield _file_item(path, root)
                elif is_image_name(match) and os.path.isfile(match):
                    found += 1
                    yield _file_item(match, root)
            problem = f"{item}: no image file matches this pattern"
        else:
            problem = f"{item}: no such file or directory"
        if not found and report is not None:
            report(problem)


def file_items(paths: Iterable[str | os.PathLike]) -> Iterator[ImageItem]:
    """One item per path, named by its stem (`predict_files`' inputs)."""
    for path in map(str, paths):
        yield _file_item(path, os.path.dirname(path) or ".")


# ----------------------------------------------------------------------------------------------------------------------
# A `datasets` split, streamed
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInput:
    """A `datasets` split to segment: a `save_to_disk` folder, a data folder or a Hub id (read with
    `load_dataset(..., streaming=True)`); `split` may be omitted when there is only one."""

    path: str
    split: str | None = None
    image_column: str = "image"
    name_column: str | None = None

    def describe(self) -> dict[str, Any]:
        """The fields that identify the split, with a local path made absolute (for the run manifest)."""
        path = os.path.abspath(self.path) if os.path.exists(self.path) else self.path
        return {"dataset": path, "split": self.split, "image_column": self.image_column, "name_column": self.name_column}


def _pick_split(splits: Any, spec: DatasetInput) -> Any:
    names = list(splits.keys())
    if spec.split is None and len(names) == 1:
        return splits[names[0]]
    if spec.split not in names:
        wanted = "--split is needed" if spec.split is None else f"no split {spec.split!r}"
        raise ValueError(f"{spec.path}: {wanted}; its splits are {names}")
    return splits[spec.split]


def open_dataset(spec: DatasetInput) -> Any:
    """The split as a `datasets.IterableDataset` whose image column is not decoded (rows of other processes are
    skipped without decoding them); any failure is a `ValueError` naming the data set."""
    import datasets

    try:
        if os.path.isdir(spec.path) and any(
            os.path.isfile(os.path.join(spec.path, name)) for name in ("dataset_dict.json", "state.json")
        ):
            loaded = datasets.load_from_disk(spec.path)
            split = _pick_split(loaded, spec) if isinstance(loaded, datasets.DatasetDict) else loaded
            split = split.to_iterable_dataset()
        elif spec.split is None:
            split = _pick_split(datasets.load_dataset(spec.path, streaming=True), spec)
        else:
            split = datasets.load_dataset(spec.path, split=spec.split, streaming=True)
    except ValueError as error:
        message = first_line(error)
        raise ValueError(message if message.startswith(spec.path) else f"{spec.path}: {message}") from None
    except Exception as error:  # noqa: BLE001 (datasets raises many kinds: missing files, no network, bad format)
        raise ValueError(f"{spec.path}: cannot load the data set ({first_line(error)})") from None
    features = split.features
    if features is not None:
        for column in filter(None, (spec.image_column, spec.name_column)):
            if column not in features:
                raise ValueError(f"{spec.path}: no column {column!r}; its columns are {list(features)}")
        if isinstance(features[spec.image_column], datasets.Image):
            split = split.cast_column(spec.image_column, datasets.Image(decode=False))
    return split


def _row_name(row: dict[str, Any], index: int, spec: DatasetInput) -> str:
    if spec.name_column is None:
        return f"{index:08d}"
    value = str(row[spec.name_column])
    return safe_name(os.path.splitext(value)[0] if is_image_name(value) else value)


def iter_dataset_images(spec: DatasetInput, split: Any | None = None) -> Iterator[ImageItem]:
    """The rows of the split (`open_dataset(spec)` unless given), lazily, as images named by `spec.name_column` or
    their position."""
    split = open_dataset(spec) if split is None else split
    where = f"{spec.describe()['dataset']}[{spec.split or 'the only split'}]"
    for index, row in enumerate(split):
        if spec.image_column not in row:
            raise ValueError(f"{spec.path}: no column {spec.image_column!r}; its columns are {list(row)}")
        name, image = _row_name(row, index, spec), row[spec.image_column]
        yield ImageItem(name, f"{spec.path} row {index}", f"{where}#{index}", image)


# ----------------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------------


def read_image(item: ImageItem) -> np.ndarray:
    """The item's pixels as RGB `(H, W, 3)`: uint8, or float32 on the 0-255 scale for 16-bit images
    (`image_processing.inputs`: every PIL mode, EXIF orientation applied, transparency composited on white).

    Whatever goes wrong (a missing or truncated file, an unknown format, an image over PIL's decompression-bomb limit,
    an unsupported mode or value range) is a `ValueError` whose message starts with `item.source`."""
    data = item.data
    try:
        if isinstance(data, dict) and ("bytes" in data or "path" in data):  # a `datasets.Image` column, not decoded
            if data.get("bytes") is not None:
                with Image.open(io.BytesIO(data["bytes"])) as image:
                    image.load()
                    return to_rgb_array(image, source=item.source)
            data = data["path"]
        if isinstance(data, (str, os.PathLike)):
            return pil_to_rgb(open_image(data, source=item.source), source=item.source)
        return to_rgb_array(data, source=item.source)
    except Exception as error:  # noqa: BLE001 (PIL raises many kinds; one image never stops the run)
        message = first_line(error)
        if not message.startswith(item.source):
            message = f"{item.source}: cannot read it as an image ({message})"
        raise ValueError(message) from None


def processor_input(rgb: np.ndarray) -> np.ndarray:
    """What the processor takes for `read_image`'s array: uint8 as it is, the 0-255 float scale of 16-bit images as
    floats in [0, 1] (the processor's convention for floating-point images; 16-bit precision kept)."""
    return rgb if rgb.dtype == np.uint8 else np.clip(rgb / np.float32(255), 0, 1)
