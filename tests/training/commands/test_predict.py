"""`eomt predict`: result files checked for format and against the processor + model called directly, inputs of
every kind (directories, globs, batches, checkpoint formats), and bad input (exit status, one-line errors).
`training.inference`'s functions are tested on their own in `tests/training/test_inference.py`."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from image_processing import EoMTImageProcessor, rgb_to_id
from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.checkpoints import save_as_transformers_eomt
from modeling_eomt.labels import COCO_NUM_THING_CLASSES, COCO_PANOPTIC_CATEGORIES, DATASET_CLASSES
from tests.modeling.checkpoints.references import original_state_dict, source_model
from tests.modeling.helpers import perturb_
from tests.training.helpers import single_thread, tiny_inference_model  # noqa: F401 (fixture)
from training.commands import main

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[3]
# Low thresholds: the tiny random model's class probabilities are far below the defaults' 0.8.
PANOPTIC_OPTIONS = ["--threshold", "0.3", "--overlap-threshold", "0.3"]
INSTANCE_OPTIONS = ["--threshold", "0.2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny model in this package's format and three images of different sizes (wide RGB, tall grayscale, small
    RGBA) in `images/`, plus a text file that is not an image."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    tiny_inference_model().save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(images / "wide.png")
    Image.fromarray(rng.integers(0, 256, (70, 50), dtype=np.uint8), "L").save(images / "tall.png")
    Image.fromarray(rng.integers(0, 256, (30, 36, 4), dtype=np.uint8), "RGBA").save(images / "small.png")
    (images / "notes.txt").write_text("not an image")
    return root


def run(*argv) -> int:
    return main(["predict", *map(str, argv)])


def direct_results(model_dir: Path, paths: list[Path], task: str, processor: EoMTImageProcessor, **options) -> list:
    """The processor and the model called directly, one batch of all images."""
    model = EoMTForUniversalSegmentation.from_pretrained(model_dir).eval()
    inputs = processor([Image.open(path) for path in paths])
    with torch.no_grad():
        outputs = model(inputs["pixel_values"], patch_offsets=inputs.get("patch_offsets"))
    post_process = getattr(processor, f"post_process_{task}_segmentation")
    return post_process(outputs, target_sizes=inputs["original_sizes"], **options)


def image_paths(workspace: Path) -> list[Path]:
    return sorted((workspace / "images").glob("*.png"))  # the order `eomt predict` takes a directory in


def test_panoptic_png_and_segments_info_match_direct_post_processing(workspace, tmp_path):
    assert run(workspace / "model", workspace / "images", "--task", "panoptic", "--out", tmp_path, *PANOPTIC_OPTIONS) == 0
    paths = image_paths(workspace)
    expected = direct_results(workspace / "model", paths, "panoptic", EoMTImageProcessor(size=64),
                              threshold=0.3, overlap_mask_area_threshold=0.3)  # fmt: skip
    document = json.loads((tmp_path / "predictions.json").read_text())
    assert [entry["file_name"] for entry in document["annotations"]] == [path.name for path in paths]
    assert [category["id"] for category in document["categories"]] == [0, 1, 2, 3]
    assert sum(len(entry["segments_info"]) for entry in document["annotations"]) > 3  # the test sees segments
    for path, entry, result in zip(paths, document["annotations"], expected):
        assert entry["image_id"] == path.stem
        ids = rgb_to_id(np.asarray(Image.open(tmp_path / "panoptic" / entry["file_name"])))
        assert ids.shape == Image.open(path).size[::-1]
        np.testing.assert_array_equal(ids, result["segmentation"].numpy() + 1)  # 0 = void, segment ids from 1
        assert set(np.unique(ids)) - {0} == {segment["id"] for segment in entry["segments_info"]}
        for segment, reference in zip(entry["segments_info"], result["segments_info"], strict=True):
            assert (segment["id"], segment["category_id"], segment["score"]) == (
                reference["id"] + 1, reference["label_id"], reference["score"]
            )
            rows, cols = np.nonzero(ids == segment["id"])
            assert segment["area"] == len(rows)
            assert segment["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            assert "isthing" not in segment  # no stuff classes known for this model
        overlay = Image.open(tmp_path / "overlays" / f"{path.stem}.png")
        assert overlay.width > ids.shape[1] and overlay.height >= ids.shape[0]  # image + legend


def test_thresholds_default_to_those_saved_with_the_model(workspace, tmp_path):
    calibrated = tmp_path / "calibrated"
    shutil.copytree(workspace / "model", calibrated)
    EoMTImageProcessor(size=64, threshold=0.3, overlap_mask_area_threshold=0.3).save_pretrained(calibrated)
    assert run(calibrated, workspace / "images", "--task", "panoptic", "--out", tmp_path / "saved") == 0
    given = ["--out", tmp_path / "given", *PANOPTIC_OPTIONS]
    assert run(workspace / "model", workspace / "images", "--task", "panoptic", *given) == 0
    default = ["--out", tmp_path / "default"]
    assert run(workspace / "model", workspace / "images", "--task", "panoptic", *default) == 0
    segments = {name: [entry["segments_info"] for entry in json.loads((tmp_path / name / "predictions.json").read_text())
                       ["annotations"]] for name in ("saved", "given", "default")}  # fmt: skip
    assert segments["saved"] == segments["given"] and sum(map(len, segments["saved"])) > 3
    assert sum(map(len, segments["default"])) < sum(map(len, segments["saved"]))  # the authors' 0.8 / 0.8 keep fewer


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode, numpy 2
def test_instance_rles_keep_overlaps_and_match_direct_post_processing(workspace, tmp_path):
    assert run(workspace / "model", workspace / "images", "--task", "instance", "--out", tmp_path, *INSTANCE_OPTIONS) == 0
    paths = image_paths(workspace)
    expected = direct_results(workspace / "model", paths, "instance", EoMTImageProcessor(size=64), threshold=0.2,
                              return_binary_maps=True)  # fmt: skip
    detections = json.loads((tmp_path / "predictions.json").read_text())
    assert isinstance(detections, list) and len(detections) == sum(len(r["segments_info"]) for r in expected) > 3
    overlapping = 0
    for path, result in zip(paths, expected):
        mine = [detection for detection in detections if detection["image_id"] == path.stem]
        height, width = Image.open(path).size[::-1]
        masks = np.stack([mask_utils.decode(detection["segmentation"]) for detection in mine]).astype(bool)
        assert masks.shape == (len(mine), height, width)
        np.testing.assert_array_equal(masks, result["segmentation"].numpy())
        assert [(d["category_id"], d["score"]) for d in mine] == [(s["label_id"], s["score"]) for s in result["segments_info"]]
        for detection, mask in zip(mine, masks):
            rows, cols = np.nonzero(mask)
            assert detection["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        overlapping += int((masks.sum(0) > 1).sum())
        assert (tmp_path / "overlays" / f"{path.stem}.png").is_file()
    assert overlapping > 0  # overlapping instances are kept, not painted over
    ground_truth = COCO()  # pycocotools reads the file as detection results
    ground_truth.dataset = {"images": [{"id": path.stem} for path in paths], "annotations": [],
                            "categories": [{"id": label} for label in range(4)]}  # fmt: skip
    ground_truth.createIndex()
    with contextlib.redirect_stdout(io.StringIO()):
        results = ground_truth.loadRes(str(tmp_path / "predictions.json"))
    assert len(results.getAnnIds()) == len(detections)


def test_semantic_png_matches_direct_sliding_windows_and_batches_equal_single_images(workspace, tmp_path):
    out_single, out_batch = tmp_path / "single", tmp_path / "batch"
    assert run(workspace / "model", workspace / "images", "--task", "semantic", "--out", out_single) == 0
    assert run(workspace / "model", workspace / "images", "--task", "semantic", "--out", out_batch, "--batch-size", "3") == 0
    paths = image_paths(workspace)
    expected = direct_results(workspace / "model", paths, "semantic", EoMTImageProcessor(size=64, do_split_image=True))
    document = json.loads((out_single / "predictions.json").read_text())
    assert document["categories"] == [{"id": label, "name": f"LABEL_{label}"} for label in range(4)]
    classes_seen = set()
    for path, entry, result in zip(paths, document["annotations"], expected, strict=True):
        label_png = Image.open(out_single / "semantic" / entry["file_name"])
        assert label_png.mode == "L" and label_png.size == Image.open(path).size
        labels = np.asarray(label_png)
        assert labels.max() < 4
        np.testing.assert_array_equal(labels, result.numpy())
        np.testing.assert_array_equal(np.asarray(Image.open(out_batch / "semantic" / entry["file_name"])), labels)
        classes_seen |= set(np.unique(labels).tolist())
    assert len(classes_seen) > 1


def test_panoptic_batches_equal_single_images(workspace, tmp_path):
    for batch_size in (1, 2):
        out = tmp_path / str(batch_size)
        assert run(workspace / "model", workspace / "images", "--out", out, "--batch-size", batch_size, *PANOPTIC_OPTIONS) == 0
    assert json.loads((tmp_path / "1" / "predictions.json").read_text()) == json.loads((tmp_path / "2" / "predictions.json").read_text())
    for path in image_paths(workspace):
        pngs = [np.asarray(Image.open(tmp_path / size / "panoptic" / f"{path.stem}.png")) for size in ("1", "2")]
        np.testing.assert_array_equal(*pngs)


def test_transformers_format_and_processor_config_of_the_model_directory(workspace, tmp_path):
    """A transformers-format directory gives the same results as ours; a `preprocessor_config.json` there is used."""
    model = EoMTForUniversalSegmentation.from_pretrained(workspace / "model")
    save_as_transformers_eomt(model, tmp_path / "transformers")
    image = workspace / "images" / "wide.png"
    assert run(workspace / "model", image, "--task", "instance", "--out", tmp_path / "ours", *INSTANCE_OPTIONS) == 0
    assert run(tmp_path / "transformers", image, "--task", "instance", "--out", tmp_path / "theirs", *INSTANCE_OPTIONS) == 0
    ours, theirs = (json.loads((tmp_path / name / "predictions.json").read_text()) for name in ("ours", "theirs"))
    assert [d["segmentation"] for d in ours] == [d["segmentation"] for d in theirs] and len(ours) > 0
    np.testing.assert_allclose([d["score"] for d in ours], [d["score"] for d in theirs], atol=1e-5)

    processor = EoMTImageProcessor(size=48)  # not the default (the model's image size, 64)
    processor.save_pretrained(tmp_path / "transformers")
    assert run(tmp_path / "transformers", image, "--out", tmp_path / "resized", *PANOPTIC_OPTIONS) == 0
    expected = direct_results(workspace / "model", [image], "panoptic", processor, threshold=0.3, overlap_mask_area_threshold=0.3)
    ids = rgb_to_id(np.asarray(Image.open(tmp_path / "resized" / "panoptic" / "wide.png")))
    np.testing.assert_array_equal(ids, expected[0]["segmentation"].numpy() + 1)


def test_original_checkpoint_is_converted_on_the_fly(tmp_path):
    torch.manual_seed(0)
    model = perturb_(source_model("dinov2-registers"), scale=0.5)
    model.attn_mask_probs.zero_()
    torch.save(original_state_dict(model), tmp_path / "pytorch_model.bin")
    model.save_pretrained(tmp_path / "ours")
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 72, 3), dtype=np.uint8)).save(image)
    for name, source in (("original", tmp_path / "pytorch_model.bin"), ("ours", tmp_path / "ours")):
        assert run(source, image, "--task", "semantic", "--out", tmp_path / name) == 0
    original, ours = (np.asarray(Image.open(tmp_path / name / "semantic" / "image.png")) for name in ("original", "ours"))
    assert original.shape == (40, 72) and len(np.unique(ours)) > 1
    np.testing.assert_array_equal(original, ours)


def test_coco_classes_get_coco_category_ids_and_isthing(tmp_path):
    """Models with COCO's panoptic classes write COCO category ids and fuse COCO's stuff classes by default."""
    torch.manual_seed(0)
    names = DATASET_CLASSES["coco_panoptic"]
    model = tiny_inference_model(num_labels=len(names), id2label=dict(enumerate(names)))
    model.save_pretrained(tmp_path / "model")
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    assert run(tmp_path / "model", image, "--out", tmp_path / "out", "--threshold", "0.05", "--overlap-threshold", "0.1") == 0
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    coco_ids = [category_id for category_id, _ in COCO_PANOPTIC_CATEGORIES]
    assert [category["id"] for category in document["categories"]] == coco_ids
    things = {category["id"] for category in document["categories"] if category["isthing"]}
    assert things == set(coco_ids[:COCO_NUM_THING_CLASSES])
    segments = document["annotations"][0]["segments_info"]
    assert segments and all(segment["category_id"] in coco_ids for segment in segments)
    assert all(segment["isthing"] == (segment["category_id"] in things) for segment in segments)
    stuff = [segment["category_id"] for segment in segments if not segment["isthing"]]
    assert len(stuff) == len(set(stuff))  # one fused segment per stuff class


def test_semantic_png_is_16_bit_beyond_256_classes(tmp_path):
    torch.manual_seed(0)
    tiny_inference_model(num_labels=300).save_pretrained(tmp_path / "model")
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    assert run(tmp_path / "model", image, "--task", "semantic", "--out", tmp_path / "out") == 0
    labels = Image.open(tmp_path / "out" / "semantic" / "image.png")
    assert labels.mode.startswith("I") and labels.size == (40, 40)  # 16-bit grayscale
    values = np.asarray(labels)
    assert values.max() < 300 and values.max() > 255  # class ids above the uint8 range survive


def test_bfloat16_run_agrees_with_float32(workspace, tmp_path):
    image = workspace / "images" / "wide.png"
    for dtype in ("float32", "bfloat16"):
        assert run(workspace / "model", image, "--task", "semantic", "--dtype", dtype, "--out", tmp_path / dtype) == 0
    full, half = (np.asarray(Image.open(tmp_path / dtype / "semantic" / "wide.png")) for dtype in ("float32", "bfloat16"))
    assert (full == half).mean() > 0.9


# ----------------------------------------------------------------------------------------------------------------------
# Inputs: files, directories, globs, names
# ----------------------------------------------------------------------------------------------------------------------


def test_numeric_names_become_integer_image_ids(workspace, tmp_path):
    images = tmp_path / "coco"
    images.mkdir()
    for name in ("000000000139.png", "000000000285.png"):
        (images / name).write_bytes((workspace / "images" / "small.png").read_bytes())
    assert run(workspace / "model", images, "--task", "instance", "--out", tmp_path / "out", *INSTANCE_OPTIONS) == 0
    detections = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert detections and {detection["image_id"] for detection in detections} <= {139, 285}


def test_images_in_sub_folders_keep_their_folders_and_same_names_get_a_suffix(workspace, tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    small = (workspace / "images" / "small.png").read_bytes()
    for name in ("a.png", "sub/a.png", "b.png"):
        (images / name).write_bytes(small)
    Image.open(workspace / "images" / "wide.png").save(images / "a.jpg")
    assert run(workspace / "model", images, "--recursive", "--task", "semantic", "--out", tmp_path / "out") == 0
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    names = [entry["file_name"] for entry in document["annotations"]]
    assert names == ["a.png", "a~2.png", "b.png", "sub/a.png"]  # sorted by name
    assert [entry["image_id"] for entry in document["annotations"]] == ["a", "a~2", "b", "sub/a"]
    sizes = {Image.open(tmp_path / "out" / "semantic" / name).size for name in names[:2]}
    assert sizes == {(36, 30), (80, 48)}  # a.png and a.jpg both segmented, under two names
    assert (tmp_path / "out" / "overlays" / "sub" / "a.png").is_file()


# ----------------------------------------------------------------------------------------------------------------------
# Runs into the same folder: resumed, refused, overwritten
# ----------------------------------------------------------------------------------------------------------------------


def test_rerun_resumes_an_interrupted_run(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(workspace / "model", workspace / "images", "--out", out, *PANOPTIC_OPTIONS) == 0
    complete = (out / "predictions.json").read_bytes()
    assert run(workspace / "model", workspace / "images", "--out", out, *PANOPTIC_OPTIONS) == 0
    assert "segmented 0 image(s), 3 already done" in capsys.readouterr().out
    assert (out / "predictions.json").read_bytes() == complete

    records = out / "records" / "rank0.jsonl"
    first, second, _ = records.read_text().splitlines(keepends=True)
    records.write_text(first + second[:40])  # as a run killed while writing its second record leaves it
    (out / "predictions.json").unlink()
    assert run(workspace / "model", workspace / "images", "--out", out, *PANOPTIC_OPTIONS) == 0
    assert "segmented 2 image(s), 1 already done" in capsys.readouterr().out
    assert (out / "predictions.json").read_bytes() == complete
    assert len(records.read_text().splitlines()) == 3


def test_other_settings_in_the_same_folder_are_refused_and_overwrite_replaces(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    images = workspace / "images"
    assert run(workspace / "model", images, "--out", out, *PANOPTIC_OPTIONS) == 0
    torch.manual_seed(1)
    tiny_inference_model().save_pretrained(tmp_path / "other_model")
    capsys.readouterr()
    refused = {
        "task": [workspace / "model", images, "--task", "semantic"],
        "threshold": [workspace / "model", images, "--threshold", "0.5", "--overlap-threshold", "0.3"],
        "model": [tmp_path / "other_model", images, *PANOPTIC_OPTIONS],
        "inputs": [workspace / "model", images / "wide.png", *PANOPTIC_OPTIONS],
        "dtype": [workspace / "model", images, "--dtype", "bfloat16", *PANOPTIC_OPTIONS],
    }
    for argv in refused.values():
        assert run(*argv, "--out", out) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == len(refused)
    expected = ['task: "panoptic" before, "semantic" now', "options.threshold: 0.3 before, 0.5 now",
                f"model: other weights ({workspace / 'model'} before, {tmp_path / 'other_model'} now)",
                "inputs.images: ", 'options.dtype: "float32" before, "bfloat16" now']  # fmt: skip
    for error, difference in zip(errors, expected):
        assert error.startswith(f"eomt predict: error: {out} holds predictions of a run with other settings (")
        assert difference in error and error.endswith("pass --overwrite (overwrite=True) to replace them, or write to another folder")
    assert sorted(path.name for path in (out / "panoptic").iterdir()) == ["small.png", "tall.png", "wide.png"]  # kept

    assert run(workspace / "model", images / "wide.png", "--task", "semantic", "--out", out, "--overwrite") == 0
    assert not (out / "panoptic").exists()  # the earlier run's files are gone
    assert sorted(path.name for path in (out / "overlays").iterdir()) == ["wide.png"]
    document = json.loads((out / "predictions.json").read_text())
    assert [entry["file_name"] for entry in document["annotations"]] == ["wide.png"]
    assert json.loads((out / "run.json").read_text())["task"] == "semantic"


# ----------------------------------------------------------------------------------------------------------------------
# Image modes and data sets
# ----------------------------------------------------------------------------------------------------------------------


def test_every_image_mode_is_segmented_as_the_8_bit_rgb_it_shows(workspace, tmp_path):
    """16-bit, 32-bit, float, gray + alpha, palette + transparency, CMYK and 1-bit files give the segmentation of the
    8-bit RGB image they show (64x80: the semantic input needs no resizing, so 16-bit precision cannot change it)."""
    from tests.training.test_prediction_inputs import mode_images

    images = tmp_path / "images"
    images.mkdir()
    modes = mode_images(size=(64, 80))
    for index, (image, file_format, rgb) in enumerate(modes.values()):
        image.save(images / f"mode{index}.{file_format.lower()}", format=file_format)
        Image.fromarray(rgb.round().astype(np.uint8)).save(images / f"rgb{index}.png")
    assert run(workspace / "model", images, "--task", "semantic", "--out", tmp_path / "out") == 0
    classes_seen = set()
    for index in range(len(modes)):
        mode, reference = (np.asarray(Image.open(tmp_path / "out" / "semantic" / f"{kind}{index}.png"))
                           for kind in ("mode", "rgb"))  # fmt: skip
        np.testing.assert_array_equal(mode, reference, err_msg=list(modes)[index])
        classes_seen |= set(np.unique(mode).tolist())
    assert len(classes_seen) > 1


def test_a_datasets_split_gives_what_its_images_as_files_give(workspace, tmp_path):
    import datasets

    paths = image_paths(workspace)
    rows = datasets.Dataset.from_dict({"image": [Image.open(path).convert("RGB") for path in paths]})
    rows.cast_column("image", datasets.Image()).save_to_disk(tmp_path / "dataset")
    files = tmp_path / "files"
    files.mkdir()
    for index, path in enumerate(paths):
        Image.open(path).convert("RGB").save(files / f"{index:08d}.png")
    assert run(workspace / "model", "--hf-dataset", tmp_path / "dataset", "--out", tmp_path / "rows", *PANOPTIC_OPTIONS) == 0
    assert run(workspace / "model", files, "--out", tmp_path / "files_out", *PANOPTIC_OPTIONS) == 0
    from_rows, from_files = ((tmp_path / name / "predictions.json").read_bytes() for name in ("rows", "files_out"))
    assert from_rows == from_files and json.loads(from_rows)["annotations"][0]["image_id"] == 0
    for index in range(len(paths)):
        name = f"panoptic/{index:08d}.png"
        assert (tmp_path / "rows" / name).read_bytes() == (tmp_path / "files_out" / name).read_bytes()


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def error_lines(stderr: str) -> list[str]:
    return [line[line.index("eomt predict: error: ") :] for line in stderr.splitlines() if "eomt predict: error: " in line]


def test_bad_images_are_reported_and_the_others_processed(workspace, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken.png"
    broken.write_text("not a PNG")
    status = run(workspace / "model", workspace / "images" / "wide.png", tmp_path / "missing.jpg", tmp_path / "empty",
                 broken, workspace / "images" / "notes.txt", "--out", tmp_path / "out", "--batch-size", 2)  # fmt: skip
    errors = error_lines(capsys.readouterr().err)
    assert status == 3
    assert errors[:2] == [f"eomt predict: error: {tmp_path / 'missing.jpg'}: no such file or directory",
                          f"eomt predict: error: {tmp_path / 'empty'}: no image files in this directory (see --recursive)"]  # fmt: skip
    assert len(errors) == 4 and str(broken) in errors[2] and "notes.txt" in errors[3]
    assert "cannot read" in errors[2] and "as an image" in errors[3]
    annotations = json.loads((tmp_path / "out" / "predictions.json").read_text())["annotations"]
    assert [entry["file_name"] for entry in annotations] == ["wide.png"]  # the good image in the bad batch
    assert (tmp_path / "out" / "overlays" / "wide.png").is_file()


def test_an_image_the_model_fails_on_is_skipped_and_a_failing_batch_is_retried_image_by_image(
    workspace, tmp_path, capsys, monkeypatch
):
    """A batch the model cannot run (as a GPU out of memory) is run image by image; an image that fails alone is
    reported (named) and skipped; the others are written."""
    import training.inference

    prepare = training.inference.prepare_model
    wide = EoMTImageProcessor(size=64)([Image.open(workspace / "images" / "wide.png")])["pixel_values"][0]
    batches = []

    def failing_prepare_model(model, device, dtype):
        forward = prepare(model, device, dtype)

        def failing_forward(pixel_values, patch_offsets=None):
            batches.append(len(pixel_values))
            if len(pixel_values) > 1:
                raise torch.OutOfMemoryError("out of memory for a batch")
            if torch.equal(pixel_values[0], wide):
                raise RuntimeError("kernel failed\non two lines")
            return forward(pixel_values, patch_offsets)

        return failing_forward

    monkeypatch.setattr(training.inference, "prepare_model", failing_prepare_model)
    assert run(workspace / "model", workspace / "images", "--out", tmp_path, "--batch-size", "3", *PANOPTIC_OPTIONS) == 3
    assert batches == [3, 1, 1, 1]
    errors = error_lines(capsys.readouterr().err)
    assert errors == [f"eomt predict: error: {workspace / 'images' / 'wide.png'}: cannot be segmented "
                      "(RuntimeError: kernel failed)"]  # fmt: skip
    annotations = json.loads((tmp_path / "predictions.json").read_text())["annotations"]
    assert [entry["file_name"] for entry in annotations] == ["small.png", "tall.png"]


@pytest.mark.parametrize("kind", ["text file", "directory without config", "missing path", "image as model", "hub id"])
def test_bad_model_is_one_line_and_exit_status_2(workspace, tmp_path, capsys, kind):
    sources = {
        "text file": tmp_path / "model.bin",
        "directory without config": tmp_path,
        "missing path": tmp_path / "no" / "model",
        "image as model": workspace / "images" / "wide.png",
        "hub id": "nobody/no-such-model",  # offline in the tests (HF_HUB_OFFLINE)
    }
    (tmp_path / "model.bin").write_text("not a checkpoint")
    source = sources[kind]
    assert run(source, workspace / "images" / "wide.png", "--out", tmp_path / "out") == 2
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    assert len(errors) == 1 and str(source) in errors[0], captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "out").exists()


def test_bad_device_and_options(workspace, tmp_path, capsys):
    image = workspace / "images" / "wide.png"
    assert run(workspace / "model", image, "--device", "cuda:99", "--out", tmp_path) == 2
    assert run(workspace / "model", image, "--device", "tpu", "--out", tmp_path) == 2
    assert run(workspace / "model", image, "--stuff-classes", "1,9", "--out", tmp_path) == 2
    assert run(workspace / "model", image, "--batch-size", "0", "--out", tmp_path) == 2
    errors = error_lines(capsys.readouterr().err)
    assert errors[0].startswith("eomt predict: error: --device cuda:99: ")
    assert errors[1].startswith("eomt predict: error: --device tpu: ")
    assert errors[2] == "eomt predict: error: --stuff-classes: [9] are not class indices of this model (0 to 3)"
    assert errors[3] == "eomt predict: error: --batch-size 0: must be at least 1"
    assert not (tmp_path / "predictions.json").exists()


def test_exit_status_of_the_command(workspace, tmp_path):
    """The real command line: a missing image among good ones exits 3 after processing them; stderr has no traceback."""
    command = [sys.executable, "-m", "training.commands", "predict", str(workspace / "model"), str(workspace / "images"),
               str(tmp_path / "missing.png"), "--out", str(tmp_path / "out"), "--task", "semantic"]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model: one thread is fastest on a shared machine
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    assert error_lines(result.stderr) == [f"eomt predict: error: {tmp_path / 'missing.png'}: no such file or directory"]
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in (tmp_path / "out" / "semantic").iterdir()) == ["small.png", "tall.png", "wide.png"]
