"""`eomt train`'s output folder: a model there is replaced only with `--overwrite`, the run's settings are recorded
for `--resume`, and an interrupted save leaves the previous model intact."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.training.commands.helpers import FAST, TINY, run_cli
from tests.training.helpers import SegmentationExamples, single_thread, tiny_segmentation_model  # noqa: F401 (fixture)
from training.trainer import EoMTTrainer, recipe_training_arguments

pytestmark = pytest.mark.usefixtures("single_thread")


def test_overwrite_replaces_a_model_and_the_run_settings_are_recorded(panoptic_root, tmp_path):
    out = tmp_path / "out"
    arguments = ["train", "--data", panoptic_root, "--out", out, *TINY, *FAST, "--steps", 1, "--no-eval"]
    assert run_cli(*arguments) == 0
    first = load_file(out / "model.safetensors")
    shutil.rmtree(out / "checkpoint-1")  # a finished run whose checkpoints were cleaned up: only the model is left
    assert run_cli(*arguments, "--seed", 1) == 2  # refused: the model stays
    assert all(torch.equal(first[key], value) for key, value in load_file(out / "model.safetensors").items())
    assert run_cli(*arguments, "--seed", 1, "--overwrite") == 0
    second = load_file(out / "model.safetensors")
    assert not all(torch.equal(first[key], second[key]) for key in first)
    recorded = json.loads((out / "train_settings.json").read_text())
    assert recorded["seed"] == 1 and recorded["max_steps"] == 1 and recorded["processes"] == 1


class FailingProcessor:
    """A processor whose save fails half-way, as a full disk would."""

    def save_pretrained(self, directory, **kwargs):
        raise OSError("No space left on device")


def test_an_interrupted_save_leaves_the_previous_model_intact(tmp_path):
    model = tiny_segmentation_model()
    args = recipe_training_arguments(str(tmp_path / "run"), use_cpu=True, report_to=[], max_steps=1)
    trainer = EoMTTrainer(model=model, args=args, train_dataset=SegmentationExamples(count=2))
    trainer.save_model(str(tmp_path / "final"))
    before = {path.name: path.read_bytes() for path in (tmp_path / "final").iterdir()}
    with torch.no_grad():
        model.class_predictor.bias.add_(1.0)
    trainer.processing_class = FailingProcessor()
    with pytest.raises(OSError, match="No space left"):
        trainer.save_model(str(tmp_path / "final"))  # the weights were written before the processor failed
    assert {path.name: path.read_bytes() for path in (tmp_path / "final").iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["final", "run"]  # no staging folder left behind
