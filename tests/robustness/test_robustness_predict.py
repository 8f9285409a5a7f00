"""Hostile and careless input to `eomt predict`, as a table of cases: what is given (files written by a builder, the
command's arguments), and what must come out (exit status; one error line per unusable input, naming it; the images
listed in `predictions.json`; files that must survive). No case may print a traceback.

Exit status: 0 every image done, 3 some inputs unusable (the others done), 2 nothing done (bad model, option, output
folder, or no image at all).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.helpers import single_thread  # noqa: F401 (fixture)
from tests.training.test_inference import tiny_model
from training.commands import main

pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass(frozen=True)
class Case:
    """`build(folder)` writes the inputs into `folder` and returns the arguments after the model (`--out` is added:
    `folder / "out"`). `errors`: for each error line, in order, texts it contains (the first names the input).
    `written`: the `file_name`s `predictions.json` lists (None: no `predictions.json`). `kept` / `gone`: paths
    (relative to `folder`) that must still exist / must not exist any more."""

    name: str
    build: Callable[[Path], list[str]]
    status: int
    errors: tuple[tuple[str, ...], ...] = ()
    written: tuple[str, ...] | None = None
    kept: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------------------------------------------------


THRESHOLDS = ("--threshold", "0.3", "--overlap-threshold", "0.3")  # the tiny random model's scores are low


def picture(seed: int, size=(30, 40), channels: int = 3) -> np.ndarray:
    shape = (*size, channels) if channels > 1 else size
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A valid PNG header claiming 100000 x 100000 pixels (over PIL's decompression-bomb limit), with no real data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def tiff_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    return buffer.getvalue()


GOOD = {"good1.png": png_bytes(picture(1)), "good2.png": png_bytes(picture(2, (40, 30)))}
BAD = {
    "bomb.png": bomb_png(),
    "truncated.png": png_bytes(picture(3, (64, 64)))[:400],
    "text.png": b"this is not an image",
    "empty.png": b"",
    "float.tiff": tiff_bytes(Image.fromarray(np.full((8, 8), 7.5, dtype=np.float32), "F")),
    "int32.tiff": tiff_bytes(Image.fromarray(np.full((8, 8), 1 << 20, dtype=np.int32), "I")),
}


def images(files: dict[str, bytes], *options: str, folder_name: str = "in") -> Callable[[Path], list[str]]:
    """A builder: `files` written into `folder / folder_name`, given as that folder."""

    def build(folder: Path) -> list[str]:
        directory = folder / folder_name
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
        return [str(directory), *options]

    return build


def earlier_run(folder: Path, arguments: list[str], *options: str) -> None:
    model = str(folder.parent / "model")
    assert main(["predict", model, *arguments, "--out", str(folder / "out"), *THRESHOLDS, *options]) == 0


def then(first: Callable[[Path], list[str]], *options: str) -> Callable[[Path], list[str]]:
    """A builder: `first`'s inputs, segmented once (with `options`) before the case's run."""

    def build(folder: Path) -> list[str]:
        arguments = first(folder)
        earlier_run(folder, arguments, *options)
        return arguments

    return build


def interrupted(folder: Path) -> list[str]:
    """A run killed while writing its second record: one record, half of the next, no predictions.json."""
    arguments = then(images(GOOD))(folder)
    records = folder / "out" / "records" / "rank0.jsonl"
    first, second = records.read_text().splitlines(keepends=True)
    records.write_text(first + second[: len(second) // 2])
    (folder / "out" / "predictions.json").unlink()
    return arguments


def overwritten(folder: Path) -> list[str]:
    """An earlier semantic run of `old.png` in the output folder, which also holds a file of the user's."""
    earlier_run(folder, images({"old.png": GOOD["good1.png"]}, folder_name="old")(folder), "--task", "semantic")
    (folder / "out" / "notes.txt").write_text("the user's own file")
    return [*images(GOOD)(folder), "--overwrite"]


def legacy_output(folder: Path) -> list[str]:
    """An output folder of an older `eomt predict` (no run.json)."""
    (folder / "out" / "overlays").mkdir(parents=True)
    (folder / "out" / "predictions.json").write_text('{"annotations": [], "categories": []}')
    return images(GOOD)(folder)


def dataset_rows(folder: Path) -> list[str]:
    """A save_to_disk split whose second row holds bytes that are no image."""
    rows = datasets.Dataset.from_dict({"image": [{"bytes": GOOD["good1.png"], "path": None},
                                                 {"bytes": b"junk", "path": None},
                                                 {"bytes": GOOD["good2.png"], "path": None}]})  # fmt: skip
    rows.cast_column("image", datasets.Image()).save_to_disk(folder / "rows")
    return ["--hf-dataset", str(folder / "rows")]


def long_names(folder: Path) -> list[str]:
    """Two images whose names fill the file system's 255 bytes: the second one's suffixed name is too long."""
    stem = "x" * 251
    return images({f"{stem}.png": GOOD["good1.png"], f"{stem}.jpg": GOOD["good2.png"]})(folder)


def sixteen_bit() -> dict[str, bytes]:
    return {"deep.png": png_bytes(picture(4, channels=1).astype(np.uint16) * 257), **GOOD}


def modes() -> dict[str, bytes]:
    rgb = Image.fromarray(picture(5))
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, format="JPEG")
    return {"palette.png": buffer.getvalue(), "cmyk.jpg": cmyk.getvalue(), "la.png": png_bytes(picture(6, channels=2), "LA"),
            "bits.png": png_bytes(picture(7, channels=1) > 127), "float.tiff": tiff_bytes(Image.fromarray(picture(8, channels=1).astype(np.float32) / 255, "F"))}  # fmt: skip


def row(index: int) -> str:
    """How `dataset_rows`' row `index` is named in messages."""
    return f"rows row {index}"


CASES = [
    # One unusable image never stops the run: reported, named, skipped; the others written (issue 13, High 2).
    Case("16-bit PNG is decoded, not refused", images(sixteen_bit()), 0, written=("deep.png", "good1.png", "good2.png")),
    Case("every other PIL mode is decoded", images(modes()), 0,
         written=("bits.png", "cmyk.png", "float.png", "la.png", "palette.png")),
    *(Case(f"unusable image: {name}", images({name: data, **GOOD}), 3,
           errors=((name, expected),), written=("good1.png", "good2.png"))
      for name, data, expected in [
          ("bomb.png", BAD["bomb.png"], "decompression bomb"),
          ("truncated.png", BAD["truncated.png"], "truncated"),
          ("text.png", BAD["text.png"], "cannot identify image file"),
          ("empty.png", BAD["empty.png"], "cannot identify image file"),
          ("float.tiff", BAD["float.tiff"], "floating-point images must be in [0, 1]"),
          ("int32.tiff", BAD["int32.tiff"], "must be 16-bit"),
      ]),
    Case("every kind of bad image at once, batches of 3", images({**BAD, **GOOD}, "--batch-size", "3"), 3,
         errors=tuple((name,) for name in sorted(BAD)), written=("good1.png", "good2.png")),
    Case("a missing file among good ones", lambda folder: [*images(GOOD)(folder), str(folder / "gone.png")], 3,
         errors=(("gone.png", "no such file or directory"),), written=("good1.png", "good2.png")),
    Case("an empty folder among good ones", lambda folder: [*images(GOOD)(folder), *images({}, folder_name="void")(folder)],
         3, errors=(("void", "no image files in this directory"),), written=("good1.png", "good2.png")),
    Case("an empty folder before good ones (reported once)",
         lambda folder: [*images({}, folder_name="void")(folder), *images(GOOD)(folder)], 3,
         errors=(("void", "no image files in this directory"),), written=("good1.png", "good2.png")),
    Case("a data set row that is no image", dataset_rows, 3, errors=((row(1), "cannot identify image file"),),
         written=("00000000.png", "00000002.png")),
    Case("a name too long for the file system once suffixed", long_names, 3,
         errors=(("x" * 251 + ".", "cannot write its results", "File name too long"),), written=("x" * 251 + ".png",)),
    # Names: two images never share output files; one image never written twice.
    Case("same stem, two formats", images({"a.png": GOOD["good1.png"], "a.jpg": GOOD["good2.png"]}), 0,
         written=("a.png", "a~2.png")),
    Case("same name in two folders (recursive)", images({"a.png": GOOD["good1.png"], "sub/a.png": GOOD["good2.png"]},
         "--recursive"), 0, written=("a.png", "sub/a.png")),
    Case("the same file given twice", lambda folder: [*images(GOOD)(folder), str(folder / "in" / "good1.png")], 0,
         written=("good1.png", "good2.png")),
    # Nothing to do, or nowhere to write it: exit 2, nothing written.
    Case("only missing inputs", lambda folder: [str(folder / "a.png"), str(folder / "b*.png")], 2,
         errors=(("a.png", "no such file or directory"), ("b*.png", "no image file matches"), ("no images to process",))),
    Case("output is a file", lambda folder: [*images(GOOD)(folder), "--out", str(folder / "in" / "good1.png")], 2,
         errors=(("good1.png", "exists and is not a directory"),)),
    Case("output folder inside a file", lambda folder: [*images(GOOD)(folder), "--out", str(folder / "in" / "good1.png" / "out")],
         2, errors=(("good1.png/out: cannot write the results there", "Not a directory"),)),
    Case("data set that does not exist", lambda folder: ["--hf-dataset", str(folder / "nothing")], 2,
         errors=(("nothing", "cannot load the data set"),)),
    Case("data set without the image column", lambda folder: [*dataset_rows(folder), "--image-column", "photo"], 2,
         errors=(("rows", "no column 'photo'"),)),
    # A second run into the same folder (issue 13, Medium 7).
    Case("same run again: resumed, nothing redone", then(images(GOOD)), 0, written=("good1.png", "good2.png")),
    Case("run killed mid-record, run again: finished", interrupted, 0, written=("good1.png", "good2.png")),
    Case("another task in the same folder", then(images(GOOD), "--task", "semantic"), 2,
         errors=(("out holds predictions of a run with other settings", 'task: "semantic" before, "panoptic" now'),),
         written=("good1.png", "good2.png"), kept=("out/semantic/good1.png",)),
    Case("another run with --overwrite: replaced", overwritten, 0, written=("good1.png", "good2.png"),
         kept=("out/notes.txt",), gone=("out/semantic", "out/overlays/old.png")),
    Case("output of an older eomt predict (no run.json)", legacy_output, 2,
         errors=(("out holds predictions without a run manifest",),), written=(), kept=("out/overlays",)),
]


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robustness_predict")
    torch.manual_seed(0)
    tiny_model().save_pretrained(root / "model")
    return root


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_predict_case(case: Case, model_root: Path, capsys):
    folder = model_root / case.name.replace(" ", "_").replace("/", "_")
    folder.mkdir()
    argv = case.build(folder)
    out = folder / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    capsys.readouterr()
    status = main(["predict", str(model_root / "model"), *argv, *THRESHOLDS])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert status == case.status, captured.err
    errors = [line for line in captured.err.splitlines() if "eomt predict: error: " in line]
    assert len(errors) == len(case.errors), errors
    for texts in case.errors:  # in any order: a folder lists its files in the file system's order
        assert sum(all(text in line for text in texts) for line in errors) == 1, (texts, errors)
    predictions = out / "predictions.json"
    if case.written is None:
        assert not predictions.exists()
    else:
        listed = [entry["file_name"] for entry in json.loads(predictions.read_text())["annotations"]]
        assert listed == list(case.written)
        assert all((out / "overlays" / name).is_file() for name in case.written)
    assert [path for path in case.kept if not (folder / path).exists()] == []
    assert [path for path in case.gone if (folder / path).exists()] == []
