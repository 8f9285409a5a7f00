"""`eomt train` under hostile data sets, output folders, checkpoints and settings: a broken file anywhere is found
before training (exit status 2, the file named, nothing written); a model or run in `--out` is never replaced or
resumed wrongly; a run that fails part-way says what it kept (exit status 3)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from image_processing.targets import id_to_rgb
from tests.robustness.cases import Case, as_params, check_case, edit_json, truncate
from tests.training.commands.helpers import FAST, TINY

LAST = "000000000004"  # the last training record of the session's COCO set: far past any sampled records
PANOPTIC_JSON = "coco/annotations/panoptic_train2017.json"


def train(data: str = "coco", *options, prepare=None, evaluate: bool = False):
    """`eomt train --data c.dir/DATA --out c.dir/out` with the tiny model and fast recipe (evaluated at the end when
    `evaluate`); `prepare(c, data_root)` breaks the private copy of the data set first."""

    def build(c):
        root = c.copy(data) if prepare is not None else getattr(c, data)
        if prepare is not None:
            prepare(c, root)
        evaluation = ["--eval-split", "val"] if evaluate else ["--no-eval"]
        return ["--data", root, "--out", c.dir / "out", *TINY, *FAST, "--steps", 2, *evaluation, *options]

    return build


def resume(*options, prepare=None):
    """`eomt train --resume` of a copy of the session's run (4 steps, checkpoints at 2 and 4) in `c.dir/out`, with
    the run's own options unless `options` change them; `prepare(c, out)` breaks the copy first."""

    def build(c):
        out = c.copy("run", "out")
        if prepare is not None:
            prepare(c, out)
        settings = {"--steps": "4", "--save-steps": "2", "--save-total-limit": "3", **dict(zip(options[::2], options[1::2]))}
        return ["--data", c.coco, "--out", out, *TINY, *FAST, "--no-eval", "--resume",
                *(item for pair in settings.items() for item in pair)]  # fmt: skip

    return build


def write_png(path, array):
    Image.fromarray(array).save(path)


def unknown_segment_ids(c, root):
    ids = np.zeros((32, 32), np.int64)
    ids[:8, :8] = 4242
    write_png(root / "annotations" / "panoptic_train2017" / f"{LAST}.png", id_to_rgb(ids))


def label_value(value, path):
    def prepare(c, root):
        write_png(root / path, np.full((32, 32), value, np.uint8))

    return prepare


def duplicate_image_ids(c, root):
    def edit(document):
        document["images"][3]["id"] = document["images"][2]["id"]
        document["annotations"][3]["image_id"] = document["images"][2]["id"]

    edit_json(root / "annotations" / "panoptic_train2017.json", edit)


def unlink(*names):
    return lambda c, out: [(out / name).unlink() for name in names]


def remove_rng_states(c, out):
    for path in (out / "checkpoint-4").glob("rng_state*.pth"):
        path.unlink()


def model_in(c):
    """A model (and nothing else) in `c.dir/out`."""
    c.copy("model", "out")
    return ["--data", c.coco, "--out", c.dir / "out", *TINY, *FAST, "--steps", 2, "--no-eval"]


BROKEN_DATA = [
    Case("train", "PNG ids missing from the JSON in the last record", train(prepare=unknown_segment_ids),
         expect=[f"{{dir}}/coco/annotations/panoptic_train2017/{LAST}.png", "segment ids [4242] in the PNG are not in "
                 "segments_info"], absent=["out"]),
    Case("train", "truncated image in the last record",
         train(prepare=lambda c, root: truncate(root / "train2017" / f"{LAST}.jpg", 0.7)),
         expect=[f"{{dir}}/coco/train2017/{LAST}.jpg", "image file is truncated"], absent=["out"]),
    Case("train", "truncated panoptic PNG in the last record",
         train(prepare=lambda c, root: truncate(root / "annotations" / "panoptic_train2017" / f"{LAST}.png", 0.8)),
         expect=[f"{{dir}}/coco/annotations/panoptic_train2017/{LAST}.png"], absent=["out"]),
    Case("train", "corrupt validation image",
         train(prepare=lambda c, root: truncate(root / "val2017" / "000000000002.jpg", 0.7), evaluate=True),
         expect=["{dir}/coco/val2017/000000000002.jpg", "truncated"], absent=["out"]),
    Case("train", "ADE20K label value out of range", train("ade", prepare=label_value(200, "annotations/training/ADE_train_00000003.png")),
         expect=["{dir}/ade/annotations/training/ADE_train_00000003.png", "label values [200]"], absent=["out"]),
    Case("train", "Cityscapes label id out of range",
         train("cityscapes", prepare=label_value(40, "gtFine/train/city/city_000001_000019_gtFine_labelIds.png")),
         expect=["{dir}/cityscapes/gtFine/train/city/city_000001_000019_gtFine_labelIds.png", "label values [40]"],
         absent=["out"]),
    Case("train", "duplicate image ids", train(prepare=duplicate_image_ids),
         expect=["{dir}/" + PANOPTIC_JSON, "2 entries of 'images' have the id 3 (000000000003.jpg, 000000000004.jpg); "
                 "image ids must be unique"], absent=["out"]),
    Case("train", "missing image", train(prepare=lambda c, root: (root / "train2017" / f"{LAST}.jpg").unlink()),
         expect=[f"{{dir}}/coco/train2017/{LAST}.jpg: missing image file"], absent=["out"]),
    Case("train", "invalid annotation JSON",
         train(prepare=lambda c, root: (root / "annotations" / "panoptic_train2017.json").write_text("{'images': [")),
         expect=["{dir}/" + PANOPTIC_JSON + ": not valid JSON"], absent=["out"]),
    Case("train", "unknown category", train(prepare=lambda c, root: edit_json(
             root / "annotations" / "panoptic_train2017.json",
             lambda d: d["annotations"][3]["segments_info"][0].update(category_id=999))),
         expect=[f"{LAST}.png: segment", "has category_id 999, not in the categories"], absent=["out"]),
    Case("train", "instance RLE of the wrong size", train("coco_instance", prepare=lambda c, root: edit_json(
             root / "annotations" / "instances_train2017.json",
             lambda d: d["annotations"][-1].update(segmentation={"size": [8, 8], "counts": [64]}))),
         expect=["{dir}/coco_instance/train2017/", "RLE size [8, 8] differs from the image size [32, 32]"],
         absent=["out"]),
    Case("train", "no such data folder", lambda c: ["--data", c.dir / "nowhere", "--out", c.dir / "out", *TINY],
         expect=["{dir}/nowhere: no such data set folder"], absent=["out"]),
]  # fmt: skip

OUTPUT = [
    Case("train", "a model in --out", model_in, expect=["--out {dir}/out: already holds a model (config.json, "
         "model.safetensors); pass --overwrite to replace it"], keeps=["out"]),
    Case("train", "--out is a file", lambda c: (c.dir / "out").write_text("notes") and train()(c),
         expect=["--out {dir}/out: exists and is not a directory"], keeps=["out"]),
    Case("train", "checkpoints in --out without --resume", lambda c: c.copy("run", "out") and train()(c),
         expect=["{dir}/out already holds checkpoints: pass --resume"], keeps=["out"]),
]  # fmt: skip

RESUME = [
    Case("train", "resume without optimizer.pt", resume(prepare=unlink("checkpoint-4/optimizer.pt")),
         expect=["--resume: {dir}/out/checkpoint-4 is incomplete: no optimizer.pt", "remove it to resume from "
                 "checkpoint-2"], keeps=["out"]),
    Case("train", "resume without scheduler.pt", resume(prepare=unlink("checkpoint-4/scheduler.pt")),
         expect=["checkpoint-4 is incomplete: no scheduler.pt"], keeps=["out"]),
    Case("train", "resume without trainer_state.json", resume(prepare=unlink("checkpoint-4/trainer_state.json")),
         expect=["checkpoint-4 is incomplete: no trainer_state.json"], keeps=["out"]),
    Case("train", "resume without the weights", resume(prepare=unlink("checkpoint-4/model.safetensors")),
         expect=["checkpoint-4 is incomplete: no model weights"], keeps=["out"]),
    Case("train", "resume without the random state", resume(prepare=remove_rng_states),
         expect=["checkpoint-4 is incomplete: no rng_state.pth"], keeps=["out"]),
    Case("train", "resume from truncated weights",
         resume(prepare=lambda c, out: truncate(out / "checkpoint-4" / "model.safetensors")),
         expect=["{dir}/out/checkpoint-4/model.safetensors: not readable"], keeps=["out"]),
    Case("train", "resume from a truncated optimizer state",
         resume(prepare=lambda c, out: truncate(out / "checkpoint-4" / "optimizer.pt", 0.9)),
         expect=["{dir}/out/checkpoint-4/optimizer.pt: not readable"], keeps=["out"]),
    Case("train", "resume with other --steps", resume("--steps", "8"),
         expect=["the schedule options differ", "--steps 8 (the run: 4)"], keeps=["out"]),
    Case("train", "resume with another --lr and --grad-accum", resume("--lr", "0.01", "--grad-accum", "2"),
         expect=["--lr 0.01 (the run: 0.001)", "--grad-accum 2 (the run: 1)"], keeps=["out"]),
    Case("train", "resume with other annealing steps", resume("--annealing-start-steps", "1", "2",
         "--annealing-end-steps", "3", "4"), expect=["--annealing-start-steps 1 2 (the run: unset)"], keeps=["out"]),
    Case("train", "resume with corrupt run settings",
         resume(prepare=lambda c, out: (out / "train_settings.json").write_text("{")),
         expect=["{dir}/out/train_settings.json: not valid JSON"], keeps=["out"]),
    Case("train", "resume without checkpoints", lambda c: train("coco", "--resume")(c),
         expect=["--resume: no checkpoint-* folder in {dir}/out"], absent=["out"]),
]  # fmt: skip

STOPPED = [
    Case("train", "diverging run", train("coco", "--lr", "1000", "--steps", "30", "--save-steps", "5"),
         expect=["training diverged: steps", "NaN or infinite losses or gradients", "the final model was not written",
                 "the last checkpoint with finite weights is {dir}/out/checkpoint-5"], status=3,
         absent=["out/model.safetensors", "out/config.json"], present=["out/checkpoint-5", "out/log_history.json"]),
    Case("train", "truncated image with --skip-validation",
         train("coco", "--skip-validation", prepare=lambda c, root: [truncate(p, 0.7) for p in (root / "train2017").glob("*.jpg")]),
         expect=["training stopped at step 0:", "{dir}/coco/train2017/", "image file is truncated",
                 "no checkpoint was saved"], status=3, absent=["out/model.safetensors"]),
    Case("train", "final evaluation fails", train(
             "coco", "--skip-validation", prepare=lambda c, root: truncate(root / "val2017" / "000000000002.jpg", 0.7),
             evaluate=True),
         expect=["the final evaluation failed", "{dir}/coco/val2017/000000000002.jpg", "the trained model was written "
                 "to {dir}/out"], status=3, present=["out/model.safetensors", "out/config.json", "out/log_history.json"],
         absent=["out/metrics.json"]),
]  # fmt: skip


@pytest.mark.parametrize("case", as_params(BROKEN_DATA + OUTPUT + RESUME + STOPPED))
def test_train(case, workspace, tmp_path, capsys, caplog):
    check_case(case, workspace, tmp_path, capsys, caplog)
