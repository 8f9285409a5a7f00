"""EoMTTrainer end to end on a tiny model: learning, logging, accumulation, checkpointing, mixed precision, saving."""

import logging

import pytest
import torch
from transformers import TrainerCallback, ViTImageProcessor

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.loss_eomt import MaskClassificationLoss
from tests.modeling.helpers import use_cpu_kernels
from tests.training.data_helpers import synthetic_panoptic  # noqa: F401 (a fixture)
from tests.training.helpers import (  # noqa: F401 (single_thread is a fixture)
    IMAGE_SIZE,
    SegmentationExamples,
    random_targets,
    single_thread,
    tiny_segmentation_model,
)
from training.annealing import MaskAnnealingCallback
from training.data import EpochCallback, make_train_dataset
from training.optim import two_stage_warmup_poly_factor
from training.trainer import RECIPE_DEFAULTS, EoMTDataCollator, EoMTTrainer, recipe_training_arguments

LEVELS = ("", "_block0", "_block1")

pytestmark = pytest.mark.usefixtures("single_thread")


def make_trainer(output_dir, model=None, dataset=None, num_points=64, **options):
    """EoMTTrainer on CPU with the recipe's arguments, `options` split between TrainingArguments and the trainer."""
    trainer_options = {key: options.pop(key) for key in list(options) if key in (
        "layer_decay", "head_warmup_steps", "backbone_warmup_steps", "mask_annealing", "processing_class", "callbacks"
    )}  # fmt: skip
    defaults = dict(use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no", logging_steps=1, per_device_train_batch_size=2)
    args = recipe_training_arguments(str(output_dir), **{**defaults, **options})
    model = model if model is not None else tiny_segmentation_model()
    loss_fn = MaskClassificationLoss.from_config(model.config, num_points=num_points)
    return EoMTTrainer(model=model, args=args, train_dataset=dataset or SegmentationExamples(count=2), loss_fn=loss_fn, **trainer_options)


def parameters(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def max_difference(a, b):
    return max((a[name] - b[name]).abs().max().item() for name in a)


def test_collator_stacks_images_and_keeps_variable_targets_as_lists():
    mask_labels, class_labels = random_targets([2, 0, 3], 16, 16)
    features = [
        {"pixel_values": torch.randn(3, 16, 16), "mask_labels": m, "class_labels": c.tolist(), "image_id": i}
        for i, (m, c) in enumerate(zip(mask_labels, class_labels))
    ]
    batch = EoMTDataCollator()(features)
    assert batch["pixel_values"].shape == (3, 3, 16, 16)
    assert [m.shape[0] for m in batch["mask_labels"]] == [2, 0, 3]
    assert all(c.dtype == torch.long for c in batch["class_labels"])
    assert torch.equal(batch["class_labels"][2], class_labels[2])
    assert batch["image_id"] == [0, 1, 2]
    features[1]["pixel_values"] = torch.randn(3, 16, 32)
    with pytest.raises(ValueError, match=r"example 1: pixel_values has shape \(3, 16, 32\), expected \(3, 16, 16\)"):
        EoMTDataCollator()(features)


def test_optimizer_and_schedule_follow_the_recipe(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=10, learning_rate=2e-4, weight_decay=0.01, layer_decay=0.5)
    trainer.create_optimizer_and_scheduler(num_training_steps=3000)
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert groups["head"]["initial_lr"] == 2e-4 and groups["backbone.norm"]["initial_lr"] == 2e-4
    assert groups["backbone.block2"]["initial_lr"] == 2e-4 and groups["backbone.block0"]["initial_lr"] == pytest.approx(2e-4 * 0.25)
    assert groups["backbone.embeddings"]["initial_lr"] == pytest.approx(2e-4 * 0.25)
    assert all(group["weight_decay"] == 0.01 for group in groups.values())
    assert groups["head"]["lr"] == 0.0 and groups["backbone.block2"]["lr"] == 0.0  # both stages start at 0
    for _ in range(700):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert groups["head"]["lr"] == pytest.approx(2e-4 * two_stage_warmup_poly_factor(700, 3000, False))
    assert groups["backbone.block0"]["lr"] == pytest.approx(5e-5 * 200 / 1000)  # in the backbone warm-up
    assert RECIPE_DEFAULTS == dict(learning_rate=1e-4, weight_decay=0.05, max_grad_norm=0.01)
    assert isinstance(trainer.callback_handler.callbacks[0], MaskAnnealingCallback)


def test_loss_decreases_components_are_logged_and_the_saved_model_runs_mask_free(tmp_path):
    trainer = make_trainer(
        tmp_path, max_steps=12, learning_rate=2e-3, max_grad_norm=1.0, head_warmup_steps=0, backbone_warmup_steps=0,
        processing_class=ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
    )  # fmt: skip
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    losses = [entry["loss"] for entry in logs]
    print(f"loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3

    for entry in logs:  # logging every step: the logged loss is the weighted sum of the logged components
        weighted = sum(2 * entry[f"loss_cross_entropy{s}"] + 5 * entry[f"loss_mask{s}"] + 5 * entry[f"loss_dice{s}"] for s in LEVELS)
        assert entry["loss"] == pytest.approx(weighted, rel=1e-4)
        assert "attn_mask_prob_0" in entry and "attn_mask_prob_1" in entry

    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "preprocessor_config.json").is_file()
    reloaded = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "final").eval()
    assert reloaded.attn_mask_probs.tolist() == [0.0, 0.0]
    pixel_values = torch.stack([trainer.train_dataset[0]["pixel_values"]])
    with torch.no_grad():
        outputs = reloaded(pixel_values)
        assert outputs.intermediate_masks_queries_logits is None
        assert torch.allclose(outputs.masks_queries_logits, trainer.model.eval()(pixel_values).masks_queries_logits)


def deterministic_update(output_dir, **options):
    """Parameters after 2 SGD steps with every pixel as a point and fixed masked attention: no randomness at all."""
    trainer = make_trainer(
        output_dir, num_points=None, max_steps=2, optim="sgd", learning_rate=0.05, weight_decay=0.0, max_grad_norm=0.0,
        head_warmup_steps=0, backbone_warmup_steps=0, mask_annealing=False, **options,
    )  # fmt: skip
    trainer.train()
    return parameters(trainer.model), [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    """2 images x 1 step vs 1 image x 2 accumulation steps. Exact when every image has the same number of target masks:
    each micro-batch normalises by its own `num_masks` (as the authors' Lightning loop does)."""
    initial = parameters(tiny_segmentation_model())
    full, full_losses = deterministic_update(tmp_path / "full", per_device_train_batch_size=2)
    accumulated, accumulated_losses = deterministic_update(
        tmp_path / "accumulated", per_device_train_batch_size=1, gradient_accumulation_steps=2
    )
    change = max_difference(full, initial)
    difference = max_difference(full, accumulated)
    print(f"update {change:.2e}, accumulation difference {difference:.2e}")
    assert change > 1e-2 and difference < 1e-5
    assert accumulated_losses == pytest.approx(full_losses, rel=1e-5)


def test_gradient_checkpointing_gives_the_same_update(tmp_path):
    plain, _ = deterministic_update(tmp_path / "plain")
    checkpointed, _ = deterministic_update(tmp_path / "checkpointed", gradient_checkpointing=True)
    assert max_difference(plain, checkpointed) < 1e-6


def test_bf16_autocast_on_cpu(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, bf16=True, learning_rate=1e-3)
    dtypes = []
    trainer.model.class_predictor.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    initial = parameters(trainer.model)
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    final = parameters(trainer.model)
    assert all(torch.isfinite(p).all() for p in final.values()) and max_difference(final, initial) > 0
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(entry["loss_dice_block1"])) for entry in logs)


@pytest.mark.parametrize("fast_bfloat16", [True, False], ids=["bf16-cpu", "avx2-cpu"])
def test_bf16_on_a_cpu_without_fast_bfloat16_is_warned_about(tmp_path, monkeypatch, caplog, fast_bfloat16):
    # bf16 autocast made a training step of the demo model 10x slower than float32 on an AMD EPYC Zen 3 (AVX2 only)
    use_cpu_kernels(monkeypatch, fast_bfloat16=fast_bfloat16)
    with caplog.at_level(logging.WARNING, logger="training.trainer"):
        make_trainer(tmp_path, bf16=True)
        make_trainer(tmp_path, bf16=False)
    warnings = [record for record in caplog.records if "bf16 mixed precision on a CPU without" in record.message]
    assert len(warnings) == (0 if fast_bfloat16 else 1)


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    """Shuffled data, random points, masked attention mid-annealing, AdamW + schedule: resuming mid-epoch at step 3
    gives exactly the weights of the uninterrupted run after 6 steps."""
    options = dict(
        max_steps=6, head_warmup_steps=2, backbone_warmup_steps=2, learning_rate=1e-3, dataset=SegmentationExamples(count=8),
        save_strategy="steps", save_steps=3,
    )  # fmt: skip
    uninterrupted = make_trainer(tmp_path / "a", mask_annealing=MaskAnnealingCallback([1, 2], [5, 6]), **options)
    uninterrupted.train()
    resumed = make_trainer(
        tmp_path / "b", model=tiny_segmentation_model(seed=1), mask_annealing=MaskAnnealingCallback([1, 2], [5, 6]), **options
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    a, b = parameters(uninterrupted.model), parameters(resumed.model)
    assert max_difference(a, parameters(tiny_segmentation_model())) > 1e-4
    assert max_difference(a, b) == 0.0
    logged = lambda trainer: [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-3:]  # noqa: E731
    assert logged(resumed) == logged(uninterrupted)


def test_batches_without_targets_are_reported(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    with pytest.raises(ValueError, match=r"missing \['mask_labels', 'class_labels'\]"):
        trainer.compute_loss(trainer.model, {"pixel_values": torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)})


def test_augmentation_draws_follow_the_epoch(tmp_path, synthetic_panoptic):
    """A `make_train_dataset` set gets its `EpochCallback` from the trainer (multi-process runs need it): every epoch
    draws new augmentations."""
    dataset = make_train_dataset(synthetic_panoptic[0], "train", input_size=IMAGE_SIZE)
    epochs_seen = []

    class RecordEpoch(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            epochs_seen.append(dataset.epoch)

    model = tiny_segmentation_model(num_labels=dataset.info.num_labels)
    trainer = make_trainer(tmp_path, model=model, dataset=dataset, num_train_epochs=3,
                           per_device_train_batch_size=len(dataset), callbacks=[RecordEpoch()])  # fmt: skip
    trainer.train()
    assert epochs_seen == [0, 1, 2]
    assert sum(isinstance(callback, EpochCallback) for callback in trainer.callback_handler.callbacks) == 1
