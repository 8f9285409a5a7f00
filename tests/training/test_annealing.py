"""Mask annealing: the pure schedule, the step semantics of the authors' loop, and a real `transformers.Trainer` run."""

import logging

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.loss_eomt import MaskClassificationLoss
from tests.training.helpers import SegmentationExamples, single_thread, tiny_segmentation_model  # noqa: F401 (fixture)
from training.annealing import MaskAnnealingCallback, MaskAnnealingSchedule, annealing_probability, unwrap_model
from training.trainer import EoMTDataCollator

pytestmark = pytest.mark.usefixtures("single_thread")


def flat(probabilities):
    return [p for ps in probabilities for p in ps]


def authors_mask_annealing(start, step, end, power=0.9):
    """`LightningModule.mask_annealing` of the authors' code, restated."""
    if step < start:
        return 1.0
    if step >= end:
        return 0.0
    return (1.0 - (step - start) / (end - start)) ** power


def authors_forward_probabilities(starts, ends, num_steps, accumulation):
    """The probabilities each forward pass of the authors' Lightning loop uses: the buffer starts at 1 and
    `on_train_batch_end` sets it from `global_step` (optimizer steps completed) after every batch."""
    probs, used, global_step = [1.0] * len(starts), [], 0
    for _ in range(num_steps):
        for micro_batch in range(accumulation):
            used.append(list(probs))
            if micro_batch == accumulation - 1:
                global_step += 1  # the optimizer step happens before on_train_batch_end
            probs = [authors_mask_annealing(start, global_step, end) for start, end in zip(starts, ends)]
    return used


# ---- the pure schedule ---------------------------------------------------------------------------------------------------


def test_default_schedule_splits_training_into_n_plus_2_parts():
    schedule = MaskAnnealingSchedule.from_total_steps(88704, num_blocks=4)
    assert schedule.start_steps == (14784, 29568, 44352, 59136)
    assert schedule.end_steps == (29568, 44352, 59136, 73920)
    assert schedule.power == 0.9
    odd = MaskAnnealingSchedule.from_total_steps(100, num_blocks=2)  # quarters, rounded down
    assert (odd.start_steps, odd.end_steps) == ((25, 50), (50, 75))


def test_polynomial_decay_at_key_steps():
    start, end = 100, 300
    assert annealing_probability(0, start, end) == 1.0
    assert annealing_probability(99, start, end) == 1.0
    assert annealing_probability(100, start, end) == 1.0
    assert annealing_probability(200, start, end) == pytest.approx(0.5**0.9)
    assert annealing_probability(250, start, end, power=2.0) == pytest.approx(0.25**2)
    assert 0 < annealing_probability(299, start, end) < 0.01
    assert annealing_probability(300, start, end) == 0.0
    assert annealing_probability(10**6, start, end) == 0.0
    schedule = MaskAnnealingSchedule((100, 200), (300, 400))
    for step in (0, 150, 250, 350, 450):
        assert schedule.probabilities(step) == [authors_mask_annealing(100, step, 300), authors_mask_annealing(200, step, 400)]


def test_schedule_rejects_inconsistent_steps():
    with pytest.raises(ValueError, match="2 start steps but 1 end steps"):
        MaskAnnealingSchedule((1, 2), (3,))
    with pytest.raises(ValueError, match="block 1: need 0 <= start <= end, got start=5, end=4"):
        MaskAnnealingSchedule((1, 5), (3, 4))
    with pytest.raises(ValueError, match="give both start_steps and end_steps"):
        MaskAnnealingCallback(start_steps=[1, 2])


def test_unwrap_model_sees_through_wrappers():
    model = tiny_segmentation_model()

    class DataParallelLike(nn.Module):  # DDP, accelerate
        def __init__(self, module):
            super().__init__()
            self.module = module

    class CompiledLike(nn.Module):  # torch.compile's OptimizedModule
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

    assert unwrap_model(DataParallelLike(CompiledLike(model))) is model


# ---- with transformers.Trainer -------------------------------------------------------------------------------------------


class LossTrainer(Trainer):
    """A plain `Trainer` with the minimal `compute_loss` for EoMT; records the probabilities of every forward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.criterion = MaskClassificationLoss.from_config(self.model.config, num_points=32)
        self.used_probabilities = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.used_probabilities.append(model.attn_mask_probs.tolist())
        out = model(pixel_values=inputs["pixel_values"])
        loss, _ = self.criterion(
            out.masks_queries_logits, out.class_queries_logits, inputs["mask_labels"], inputs["class_labels"],
            out.intermediate_masks_queries_logits, out.intermediate_class_queries_logits,
        )  # fmt: skip
        return loss


def make_trainer(output_dir, callback, max_steps=6, accumulation=1, save_steps=None):
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=1,
        gradient_accumulation_steps=accumulation, logging_steps=2, report_to=[], use_cpu=True,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, remove_unused_columns=False,
        learning_rate=1e-3, disable_tqdm=True,
    )  # fmt: skip
    return LossTrainer(
        model=tiny_segmentation_model(), args=args, data_collator=EoMTDataCollator(),
        train_dataset=SegmentationExamples(count=4), callbacks=[callback],
    )  # fmt: skip


def test_trainer_uses_the_authors_probabilities_logs_them_and_ends_mask_free(tmp_path):
    starts, ends = [1, 2], [4, 5]
    trainer = make_trainer(tmp_path, MaskAnnealingCallback(starts, ends), max_steps=6, accumulation=2)
    trainer.train()
    expected = authors_forward_probabilities(starts, ends, num_steps=6, accumulation=2)
    assert flat(trainer.used_probabilities) == pytest.approx(flat(expected))
    assert 0 < min(p for p in flat(expected) if p > 0) < 1  # the run really passes through the decay

    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [2, 4, 6]
    for entry in logged:  # the values for the next step, as the authors log them
        step = entry["step"]
        assert [entry["attn_mask_prob_0"], entry["attn_mask_prob_1"]] == pytest.approx(
            [authors_mask_annealing(s, step, e) for s, e in zip(starts, ends)]
        )

    assert trainer.model.attn_mask_probs.tolist() == [0.0, 0.0]
    trainer.save_model(tmp_path / "final")
    reloaded = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "final").eval()
    assert reloaded.attn_mask_probs.tolist() == [0.0, 0.0]
    outputs = reloaded(torch.randn(1, 3, 32, 32))
    assert outputs.intermediate_masks_queries_logits is None  # mask-free inference


def test_unfinished_schedule_is_forced_to_zero_at_the_end(tmp_path, caplog):
    trainer = make_trainer(tmp_path, MaskAnnealingCallback([2, 3], [10, 12]), max_steps=3)
    with caplog.at_level(logging.WARNING, logger="training.annealing"):
        trainer.train()
    assert any("after the last training step" in record.message for record in caplog.records)
    assert trainer.model.attn_mask_probs.tolist() == [0.0, 0.0]


def test_default_schedule_follows_the_number_of_steps(tmp_path):
    trainer = make_trainer(tmp_path, MaskAnnealingCallback(), max_steps=8)
    trainer.train()
    # 2 blocks, 8 steps: block 0 anneals over [2, 4), block 1 over [4, 6)
    assert flat(trainer.used_probabilities) == pytest.approx(flat(authors_forward_probabilities([2, 4], [4, 6], 8, 1)))


def test_resume_mid_annealing_reproduces_the_uninterrupted_probabilities(tmp_path):
    starts, ends = [1, 2], [5, 6]
    uninterrupted = make_trainer(tmp_path / "a", MaskAnnealingCallback(starts, ends), max_steps=6, save_steps=3)
    uninterrupted.train()
    resumed = make_trainer(tmp_path / "b", MaskAnnealingCallback(starts, ends), max_steps=6)
    resumed.model.set_attn_mask_probs(1.0)  # whatever the fresh model holds, the checkpoint step decides
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert len(resumed.used_probabilities) == 3
    assert resumed.used_probabilities == uninterrupted.used_probabilities[3:]
    assert 0 < resumed.used_probabilities[0][0] < 1


def test_wrong_number_of_blocks_is_reported(tmp_path):
    trainer = make_trainer(tmp_path, MaskAnnealingCallback([1, 2, 3], [4, 5, 6]), max_steps=1)
    with pytest.raises(ValueError, match="schedule has 3 blocks but the model has 2 masked blocks"):
        trainer.train()
