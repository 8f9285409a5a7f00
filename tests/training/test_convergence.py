"""A tiny EoMT trained from scratch for 300 steps on a simple generated panoptic set reaches a clearly higher PQ.

Measured with these settings (seeds 0-6, 2-core machine under load, 20-60 s of training each): PQ 0.0 at step 0 for
every seed, 33.0 / 33.4 / 34.2 / 34.0 / 33.0 / 36.9 / 34.2 after 300 steps (SQ 34-42, RQ 36-41). The test asks for
a gain of 15 points, under half the smallest one observed.
"""

import pytest
import torch

from image_processing import EoMTImageProcessor
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from modeling_eomt.loss_eomt import MaskClassificationLoss
from tests.training.helpers import single_thread  # noqa: F401 (fixture)
from training.data import EpochCallback, make_eval_dataset, make_train_dataset, write_synthetic_coco_panoptic
from training.trainer import EoMTTrainer, recipe_training_arguments

SIZE, STEPS, SEED = 64, 300, 0
MIN_PQ_GAIN = 15.0


@pytest.mark.usefixtures("single_thread")
def test_a_few_hundred_steps_raise_panoptic_quality(tmp_path):
    root = write_synthetic_coco_panoptic(tmp_path / "data", num_train=64, num_val=16, size=SIZE, seed=0,
                                         difficulty=0.0, max_things=2)  # fmt: skip
    train_dataset = make_train_dataset(root, "train", input_size=SIZE, seed=SEED)
    eval_dataset = make_eval_dataset(root, "val")
    info = train_dataset.info
    torch.manual_seed(SEED)
    config = EoMTConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_register_tokens=0, num_blocks=2,
        image_size=SIZE, patch_size=16, num_queries=16, num_labels=info.num_labels, id2label=info.id2label,
    )  # fmt: skip
    model = EoMTForUniversalSegmentation(config)
    args = recipe_training_arguments(
        str(tmp_path / "run"), use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", seed=SEED,
        max_steps=STEPS, learning_rate=2e-3, max_grad_norm=1.0, per_device_train_batch_size=4,
        per_device_eval_batch_size=8, logging_steps=50,
    )  # random weights: a higher lr and looser clipping than the fine-tuning recipe  # fmt: skip
    trainer = EoMTTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=EoMTImageProcessor(size=SIZE, num_labels=info.num_labels, stuff_classes=info.stuff_ids),
        callbacks=[EpochCallback(train_dataset)], head_warmup_steps=STEPS // 20, backbone_warmup_steps=STEPS // 20,
        loss_fn=MaskClassificationLoss.from_config(config, num_points=256), eval_loss=False,
    )  # fmt: skip
    before = trainer.evaluate()["eval_pq"]
    trainer.train()
    after = trainer.evaluate()
    print(f"PQ {before:.1f} -> {after['eval_pq']:.1f} (SQ {after['eval_sq']:.1f}, RQ {after['eval_rq']:.1f})")
    assert after["eval_pq"] >= before + MIN_PQ_GAIN
    assert model.attn_mask_probs.tolist() == [0.0, 0.0]  # annealed during training: evaluated as it will run
