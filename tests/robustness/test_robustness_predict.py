"""Hostile and careless input to `eomt predict`, as a table of cases (`cases.Case`): what is given (files written by a
builder, the command's arguments), and what must come out (exit status; one error line per unusable input, naming it;
the images listed in `predictions.json`; files that must survive). No case may print a traceback.

Exit status: 0 every image done, 3 some inputs unusable (the others done), 2 nothing done (bad model, option, output
folder, or no image at all).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable

import datasets
import numpy as np
import pytest
from PIL import Image

from tests.robustness.cases import Case, CaseContext, as_params, check_case
from training.commands import main

Build = Callable[[CaseContext], list]

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


def images(files: dict[str, bytes], *options: str, folder_name: str = "in") -> Build:
    """Inputs: `files` written into `c.dir / folder_name`, given as that folder."""

    def build(c: CaseContext) -> list[str]:
        directory = c.dir / folder_name
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
        return [str(directory), *options]

    return build


def earlier_run(c: CaseContext, arguments: list[str], *options: str) -> None:
    model = str(c.inference_model)
    assert main(["predict", model, *arguments, "--out", str(c.dir / "out"), *THRESHOLDS, *options]) == 0


def then(first: Build, *options: str) -> Build:
    """Inputs: `first`'s, segmented once (with `options`) before the case's run."""

    def build(c: CaseContext) -> list[str]:
        arguments = first(c)
        earlier_run(c, arguments, *options)
        return arguments

    return build


def interrupted(c: CaseContext) -> list[str]:
    """A run killed while writing its second record: one record, half of the next, no predictions.json."""
    arguments = then(images(GOOD))(c)
    records = c.dir / "out" / "records" / "rank0.jsonl"
    first, second = records.read_text().splitlines(keepends=True)
    records.write_text(first + second[: len(second) // 2])
    (c.dir / "out" / "predictions.json").unlink()
    return arguments


def overwritten(c: CaseContext) -> list[str]:
    """An earlier semantic run of `old.png` in the output folder, which also holds a file of the user's."""
    earlier_run(c, images({"old.png": GOOD["good1.png"]}, folder_name="old")(c), "--task", "semantic")
    (c.dir / "out" / "notes.txt").write_text("the user's own file")
    return [*images(GOOD)(c), "--overwrite"]


def legacy_output(c: CaseContext) -> list[str]:
    """An output folder of an older `eomt predict` (no run.json)."""
    (c.dir / "out" / "overlays").mkdir(parents=True)
    (c.dir / "out" / "predictions.json").write_text('{"annotations": [], "categories": []}')
    return images(GOOD)(c)


def dataset_rows(c: CaseContext) -> list[str]:
    """A save_to_disk split whose second row holds bytes that are no image."""
    rows = datasets.Dataset.from_dict({"image": [{"bytes": GOOD["good1.png"], "path": None},
                                                 {"bytes": b"junk", "path": None},
                                                 {"bytes": GOOD["good2.png"], "path": None}]})  # fmt: skip
    rows.cast_column("image", datasets.Image()).save_to_disk(c.dir / "rows")
    return ["--hf-dataset", str(c.dir / "rows")]


def long_names(c: CaseContext) -> list[str]:
    """Two images whose names fill the file system's 255 bytes: the second one's suffixed name is too long."""
    stem = "x" * 251
    return images({f"{stem}.png": GOOD["good1.png"], f"{stem}.jpg": GOOD["good2.png"]})(c)


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


# ----------------------------------------------------------------------------------------------------------------------
# The command and its outcome
# ----------------------------------------------------------------------------------------------------------------------


def predict(inputs: Build) -> Build:
    """A case's `eomt predict` arguments: the session's mask-free model, `inputs(c)` (images and options), `--out
    c.dir / "out"` unless they name one, and `THRESHOLDS`."""

    def build(c: CaseContext) -> list:
        arguments = inputs(c)
        out = [] if "--out" in arguments else ["--out", c.dir / "out"]
        return [c.inference_model, *arguments, *out, *THRESHOLDS]

    return build


def written(*names: str) -> Callable[[CaseContext], None]:
    """A check: `out/predictions.json` lists exactly the images `names`, in this order, each with its overlay."""

    def verify(c: CaseContext) -> None:
        out = c.dir / "out"
        listed = [entry["file_name"] for entry in json.loads((out / "predictions.json").read_text())["annotations"]]
        assert listed == list(names)
        assert all((out / "overlays" / name).is_file() for name in names)

    return verify


NOTHING_WRITTEN = ("out/predictions.json",)


CASES = [
    # One unusable image never stops the run: reported, named, skipped; the others written (issue 13, High 2).
    Case("predict", "16-bit PNG is decoded, not refused", predict(images(sixteen_bit())), status=0,
         verify=written("deep.png", "good1.png", "good2.png")),
    Case("predict", "every other PIL mode is decoded", predict(images(modes())), status=0,
         verify=written("bits.png", "cmyk.png", "float.png", "la.png", "palette.png")),
    *(Case("predict", f"unusable image: {name}", predict(images({name: data, **GOOD})), status=3,
           error_lines=[(name, expected)], verify=written("good1.png", "good2.png"))
      for name, data, expected in [
          ("bomb.png", BAD["bomb.png"], "decompression bomb"),
          ("truncated.png", BAD["truncated.png"], "truncated"),
          ("text.png", BAD["text.png"], "cannot identify image file"),
          ("empty.png", BAD["empty.png"], "cannot identify image file"),
          ("float.tiff", BAD["float.tiff"], "floating-point images must be in [0, 1]"),
          ("int32.tiff", BAD["int32.tiff"], "must be 16-bit"),
      ]),
    Case("predict", "every kind of bad image at once, batches of 3",
         predict(images({**BAD, **GOOD}, "--batch-size", "3")), status=3, error_lines=[(name,) for name in sorted(BAD)], verify=written("good1.png", "good2.png")),
    Case("predict", "a missing file among good ones", predict(lambda c: [*images(GOOD)(c), str(c.dir / "gone.png")]),
         status=3, error_lines=[("gone.png", "no such file or directory")], verify=written("good1.png", "good2.png")),
    Case("predict", "an empty folder among good ones",
         predict(lambda c: [*images(GOOD)(c), *images({}, folder_name="void")(c)]), status=3,
         error_lines=[("void", "no image files in this directory")], verify=written("good1.png", "good2.png")),
    Case("predict", "an empty folder before good ones (reported once)",
         predict(lambda c: [*images({}, folder_name="void")(c), *images(GOOD)(c)]), status=3,
         error_lines=[("void", "no image files in this directory")], verify=written("good1.png", "good2.png")),
    Case("predict", "a data set row that is no image", predict(dataset_rows), status=3,
         error_lines=[(row(1), "cannot identify image file")], verify=written("00000000.png", "00000002.png")),
    Case("predict", "a name too long for the file system once suffixed", predict(long_names), status=3,
         error_lines=[("x" * 251 + ".", "cannot write its results", "File name too long")],
         verify=written("x" * 251 + ".png")),
    # Names: two images never share output files; one image never written twice.
    Case("predict", "same stem, two formats", predict(images({"a.png": GOOD["good1.png"], "a.jpg": GOOD["good2.png"]})),
         status=0, verify=written("a.png", "a~2.png")),
    Case("predict", "same name in two folders (recursive)",
         predict(images({"a.png": GOOD["good1.png"], "sub/a.png": GOOD["good2.png"]}, "--recursive")), status=0,
         verify=written("a.png", "sub/a.png")),
    Case("predict", "the same file given twice", predict(lambda c: [*images(GOOD)(c), str(c.dir / "in" / "good1.png")]),
         status=0, verify=written("good1.png", "good2.png")),
    # Nothing to do, or nowhere to write it: exit 2, nothing written.
    Case("predict", "only missing inputs", predict(lambda c: [str(c.dir / "a.png"), str(c.dir / "b*.png")]),
         error_lines=[("a.png", "no such file or directory"), ("b*.png", "no image file matches"),
                      ("no images to process",)], absent=NOTHING_WRITTEN),  # fmt: skip
    Case("predict", "output is a file", predict(lambda c: [*images(GOOD)(c), "--out", str(c.dir / "in" / "good1.png")]),
         error_lines=[("good1.png", "exists and is not a directory")], absent=NOTHING_WRITTEN),
    Case("predict", "output folder inside a file",
         predict(lambda c: [*images(GOOD)(c), "--out", str(c.dir / "in" / "good1.png" / "out")]),
         error_lines=[("good1.png/out: cannot write the results there", "Not a directory")], absent=NOTHING_WRITTEN),
    Case("predict", "data set that does not exist", predict(lambda c: ["--hf-dataset", str(c.dir / "nothing")]),
         error_lines=[("nothing", "cannot load the data set")], absent=NOTHING_WRITTEN),
    Case("predict", "data set without the image column",
         predict(lambda c: [*dataset_rows(c), "--image-column", "photo"]), error_lines=[("rows", "no column 'photo'")],
         absent=NOTHING_WRITTEN),
    # A second run into the same folder (issue 13, Medium 7).
    Case("predict", "same run again: resumed, nothing redone", predict(then(images(GOOD))), status=0,
         verify=written("good1.png", "good2.png")),
    Case("predict", "run killed mid-record, run again: finished", predict(interrupted), status=0,
         verify=written("good1.png", "good2.png")),
    Case("predict", "another task in the same folder", predict(then(images(GOOD), "--task", "semantic")),
         error_lines=[("out holds predictions of a run with other settings",
                       'task: "semantic" before, "panoptic" now')],
         verify=written("good1.png", "good2.png"), keeps=["out/semantic/good1.png"]),  # fmt: skip
    Case("predict", "another run with --overwrite: replaced", predict(overwritten), status=0,
         verify=written("good1.png", "good2.png"), keeps=["out/notes.txt"],
         absent=["out/semantic", "out/overlays/old.png"]),
    Case("predict", "output of an older eomt predict (no run.json)", predict(legacy_output),
         error_lines=[("out holds predictions without a run manifest",)], verify=written(), present=["out/overlays"]),
]


@pytest.mark.parametrize("case", as_params(CASES))
def test_predict(case, workspace, tmp_path, capsys, caplog):
    check_case(case, workspace, tmp_path, capsys, caplog)
