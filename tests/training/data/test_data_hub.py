"""Data sets by name or path (`--dataset`): `datasets.load_dataset` folders and `save_to_disk` folders, columns,
`--id2label` with the data set's own (non-contiguous) category ids, `val` / `validation`; the ids are stored in the
model config and `eomt predict` writes them, so that pycocotools scores its output against the ground truth directly."""

import json

import datasets
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from image_processing import id_to_rgb
from modeling_eomt import EoMTConfig
from tests.training.commands.helpers import FAST, TINY, run_cli
from tests.training.helpers import single_thread  # noqa: F401 (a fixture)
from training.data import synthetic_scene, write_synthetic_coco_instance
from training.data.hub import load_hub_source, parse_id2label, pick_split
from training.data.synthetic import CATEGORY_IDS, CLASS_NAMES, THING_CLASSES

pytestmark = pytest.mark.usefixtures("single_thread")

CATEGORIES = [{"id": i, "name": n, "isthing": int(n in THING_CLASSES)} for i, n in zip(CATEGORY_IDS, CLASS_NAMES)]


def panoptic_rows(seeds) -> datasets.Dataset:
    """Synthetic scenes as a panoptic `datasets` set whose segments use COCO-style ids with gaps (1, 2, 4, 7, ...)."""
    scenes = [synthetic_scene(seed, size=32) for seed in seeds]
    return datasets.Dataset.from_dict({
        "pixels": [scene.image for scene in scenes],
        "png": [Image.fromarray(id_to_rgb(scene.segment_map)) for scene in scenes],
        "segments": [[{"id": s["id"], "category_id": CATEGORY_IDS[s["category_id"]], "iscrowd": s["iscrowd"]}
                      for s in scene.segments] for scene in scenes],
    })  # fmt: skip


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    """A folder of data files as `datasets.load_dataset` reads it: `train` and `validation` splits."""
    folder = tmp_path_factory.mktemp("hub") / "scenes"
    (folder / "data").mkdir(parents=True)
    panoptic_rows(range(6)).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    panoptic_rows(range(100, 103)).to_parquet(folder / "data" / "validation-00000-of-00001.parquet")
    return folder


def test_split_aliases_and_column_errors(parquet_folder):
    assert pick_split(["train", "validation"], "val", "x") == "validation"
    assert pick_split(["train", "val"], "validation", "x") == "val"
    with pytest.raises(ValueError, match=r"has splits \['train'\], not 'test'"):
        pick_split(["train"], "test", "x")
    with pytest.raises(ValueError, match="no annotation column among .*--annotation-column"):
        load_hub_source(parquet_folder, "train", image_column="pixels", id2label=dict(enumerate(CLASS_NAMES)))


def test_id2label_forms(tmp_path):
    assert parse_id2label('{"1": "cat", "7": "dog"}') == ({1: "cat", 7: "dog"}, None)
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "categories": CATEGORIES[:2]}))
    assert parse_id2label(str(tmp_path / "instances.json")) == ({1: "disc", 2: "box"}, [1, 2])
    with pytest.raises(ValueError, match="--id2label: not valid JSON"):
        parse_id2label("{not json")
    with pytest.raises(ValueError, match="no such file, and not inline JSON"):
        parse_id2label(str(tmp_path / "missing.json"))


def test_a_load_dataset_folder_with_non_contiguous_ids(parquet_folder):
    source = load_hub_source(parquet_folder, "val", image_column="pixels", annotation_column="png",
                             id2label={c["id"]: c["name"] for c in CATEGORIES},
                             thing_ids=[c["id"] for c in CATEGORIES if c["isthing"]])  # fmt: skip
    info = source.info
    assert info.task == "panoptic" and len(source) == 3 and info.category_ids == CATEGORY_IDS
    assert info.id2label == dict(enumerate(CLASS_NAMES)) and info.thing_ids == (0, 1, 2, 3)
    scene = synthetic_scene(100, size=32)
    sample = source[0]
    assert sorted(sample.target.labels.tolist()) == sorted(s["category_id"] for s in scene.segments)


def test_train_evaluate_and_predict_by_name_write_the_data_sets_ids(parquet_folder, tmp_path):
    out = tmp_path / "run"
    data = ["--dataset", str(parquet_folder), "--image-column", "pixels", "--annotation-column", "png",
            "--segments-info-column", "segments", "--id2label", json.dumps(CATEGORIES)]  # fmt: skip
    assert run_cli("train", *data, "--out", out, *TINY, *FAST, "--steps", 2, "--eval-split", "val") == 0
    config = EoMTConfig.from_pretrained(out)
    assert config.category_ids == list(CATEGORY_IDS) and config.id2label[3] == "cross"
    assert config.training_summary["dataset"]["name"] == str(parquet_folder)
    assert "eval_results" in config.training_summary and (out / "README.md").is_file()
    assert run_cli("evaluate", out, *data, "--split", "validation", "--workers", 0, "--no-progress", "--cpu") == 0
    assert "eval_pq" in json.loads((out / "eval_metrics.json").read_text())

    images = tmp_path / "images"
    images.mkdir()
    for index, row in enumerate(panoptic_rows(range(100, 103))):
        row["pixels"].save(images / f"{index}.png")
    assert run_cli("predict", out, images, "--out", tmp_path / "predicted", "--threshold", 0) == 0
    predictions = json.loads((tmp_path / "predicted" / "predictions.json").read_text())
    assert [category["id"] for category in predictions["categories"]] == list(CATEGORY_IDS)
    assert {s["category_id"] for a in predictions["annotations"] for s in a["segments_info"]} <= set(CATEGORY_IDS)


def test_instance_predictions_are_scored_by_pycocotools_without_remapping(tmp_path):
    root = write_synthetic_coco_instance(tmp_path / "coco", num_train=4, num_val=2, size=32, seed=3)
    out = tmp_path / "run"
    assert run_cli("train", "--data", root, "--out", out, *TINY, *FAST, "--steps", 2, "--no-eval") == 0
    assert EoMTConfig.from_pretrained(out).category_ids == list(CATEGORY_IDS[: len(THING_CLASSES)])
    assert run_cli("predict", out, root / "val2017", "--task", "instance", "--threshold", 0,
                   "--out", tmp_path / "predicted") == 0  # fmt: skip
    predictions = json.loads((tmp_path / "predicted" / "predictions.json").read_text())
    ground_truth = COCO(str(root / "annotations" / "instances_val2017.json"))
    assert predictions and {p["category_id"] for p in predictions} <= set(ground_truth.getCatIds())
    assert not set(ground_truth.getCatIds()) <= set(range(len(THING_CLASSES)))  # class indices would not match
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(predictions), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    matched = [image for image in evaluation.evalImgs if image is not None and len(image["dtIds"])]
    assert matched  # the detections are compared with ground truth of their category
    assert {image["category_id"] for image in matched} <= set(ground_truth.getCatIds())
