"""`eomt evaluate`: the metrics of a trained model as training reported them, and bad input reported as one line."""

import json

import pytest

from tests.training.commands.helpers import assert_error, run_cli
from tests.training.helpers import single_thread, tiny_segmentation_model  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_evaluate_gives_the_metrics_of_the_end_of_training(trained_run, panoptic_root, tmp_path):
    out, _ = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert run_cli("evaluate", out, "--data", panoptic_root, "--workers", 0, "--cpu", "--no-progress",
                   "--output", tmp_path / "eval.json") == 0  # fmt: skip
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["eval_pq"] == metrics["eval_pq"] and evaluated["per_class"] == metrics["per_class"]


def test_class_mismatch_with_the_data_is_one_line(panoptic_root, tmp_path, capsys):
    checkpoint = tmp_path / "coco133"
    tiny_segmentation_model(num_labels=4, image_size=32).save_pretrained(checkpoint)  # 4 classes, the data set has 8
    assert_error(capsys, "evaluate", checkpoint, "--data", panoptic_root, "--cpu", expected="predicts 4 classes but")
