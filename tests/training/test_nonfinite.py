"""Steps with a NaN / infinite loss or gradient: skipped (the weights and the optimizer state untouched), logged as
such (never as a loss of 0), and after `max_nonfinite_steps` in a row the end of training, without a checkpoint of
the diverged model."""

import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from tests.training.helpers import SegmentationExamples, single_thread, tiny_segmentation_model  # noqa: F401 (fixture)
from training.loss import MaskClassificationLoss
from training.nonfinite import NonFiniteGuard
from training.trainer import EoMTTrainer, recipe_training_arguments

pytestmark = pytest.mark.usefixtures("single_thread")


class Poisoned:
    """The loss, made non-finite at the training calls listed in `poison` (call index -> "loss": a NaN loss;
    "gradient": a finite loss whose gradient is NaN)."""

    def __init__(self, loss_fn: MaskClassificationLoss, poison: dict[int, str], parameter: torch.nn.Parameter) -> None:
        self.loss_fn, self.poison, self.parameter, self.calls = loss_fn, poison, parameter, 0

    def __call__(self, *args, **kwargs):
        loss, components = self.loss_fn(*args, **kwargs)
        kind = self.poison.get(self.calls)
        self.calls += 1
        if kind == "loss":
            loss = loss * float("nan")
        elif kind == "gradient":  # d sqrt(x) / dx at 0 is infinite; times 0: NaN, while the loss stays finite
            loss = loss + 0.0 * torch.sqrt(self.parameter.sum() * 0.0)
        return loss, components


class RecordWeights(TrainerCallback):
    def __init__(self) -> None:
        self.after_step: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after_step.append({name: p.detach().clone() for name, p in model.named_parameters()})


def poisoned_trainer(output_dir: Path, poison: dict[int, str], **options) -> tuple[EoMTTrainer, RecordWeights]:
    model = tiny_segmentation_model()
    loss_fn = Poisoned(MaskClassificationLoss.from_config(model.config, num_points=64), poison, model.class_predictor.bias)
    record = RecordWeights()
    trainer_options = {key: options.pop(key) for key in ("max_nonfinite_steps",) if key in options}
    args = recipe_training_arguments(str(output_dir), **{
        "use_cpu": True, "report_to": [], "disable_tqdm": True, "save_strategy": "no", "logging_steps": 1,
        "per_device_train_batch_size": 2, "learning_rate": 1e-3, **options,
    })  # fmt: skip
    trainer = EoMTTrainer(model=model, args=args, train_dataset=SegmentationExamples(count=4), loss_fn=loss_fn,
                          head_warmup_steps=0, backbone_warmup_steps=0, callbacks=[record], **trainer_options)  # fmt: skip
    return trainer, record


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


def test_a_nonfinite_step_is_skipped_and_logged(tmp_path):
    trainer, record = poisoned_trainer(tmp_path, {0: "loss", 2: "gradient"}, max_steps=4)
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    steps = record.after_step
    assert same(steps[0], initial) and same(steps[2], steps[1])  # steps 1 and 3 skipped
    assert not same(steps[1], steps[0]) and not same(steps[3], steps[2])  # steps 2 and 4 trained
    assert all(torch.isfinite(p).all() for p in steps[3].values())
    guard = trainer.nonfinite_guard
    assert guard.skipped_steps == [1, 3] and not guard.stopped and trainer.state.global_step == 4
    optimizer_state = trainer.optimizer.state[trainer.model.class_predictor.bias]
    assert optimizer_state["step"].item() == 2  # AdamW only counted the two real steps

    logs = {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}
    assert math.isnan(logs[1]["loss"]) and logs[1]["nonfinite_steps"] == 1  # `Trainer` alone would log 0
    assert math.isfinite(logs[3]["loss"]) and logs[3]["nonfinite_steps"] == 1 and math.isnan(logs[3]["grad_norm"])
    assert "nonfinite_steps" not in logs[2] and "nonfinite_steps" not in logs[4]
    assert math.isfinite(logs[2]["loss"]) and logs[2]["loss"] > 0


def test_training_stops_after_consecutive_nonfinite_steps_without_saving_them(tmp_path):
    trainer, _ = poisoned_trainer(tmp_path, {call: "loss" for call in range(2, 100)}, max_steps=10, max_nonfinite_steps=3,
                                  save_strategy="steps", save_steps=1)  # fmt: skip
    trainer.train()
    guard = trainer.nonfinite_guard
    assert guard.stopped and guard.skipped_steps == [3, 4, 5] and trainer.state.global_step == 5
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == [f"checkpoint-{step}" for step in (1, 2, 3, 4)]
    assert guard.last_finite_checkpoint == str(tmp_path / "checkpoint-4")
    message = guard.describe(trainer.state.global_step)
    assert "steps 3 to 5" in message and "3 in a row" in message and str(tmp_path / "checkpoint-4") in message


def test_the_guard_needs_a_positive_limit():
    with pytest.raises(ValueError, match="max_consecutive must be at least 1, got 0"):
        NonFiniteGuard(0)
