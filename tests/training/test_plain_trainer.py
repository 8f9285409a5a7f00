"""transformers' own `Trainer` (not `EoMTTrainer`) fine-tunes EoMT: the model returns its loss from the labels the
image processor makes, `MaskAnnealingCallback` anneals the masked attention, and the loss falls."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Trainer, TrainingArguments

from image_processing import EoMTImageProcessor, id_to_rgb
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from tests.training.helpers import single_thread  # noqa: F401 (a fixture)
from training.annealing import MaskAnnealingCallback
from training.data import CLASS_NAMES, synthetic_scene

pytestmark = pytest.mark.usefixtures("single_thread")


def test_plain_trainer_with_mask_annealing_fine_tunes_on_a_datasets_set(tmp_path):
    scenes = [synthetic_scene(seed, size=64) for seed in range(16)]
    rows = datasets.Dataset.from_dict({
        "image": [scene.image for scene in scenes],
        "panoptic": [Image.fromarray(id_to_rgb(scene.segment_map)) for scene in scenes],
        "segments_info": [scene.segments for scene in scenes],
    })  # fmt: skip
    processor = EoMTImageProcessor(size=64, num_labels=len(CLASS_NAMES))

    def collate(batch):  # the processor makes transformers' training fields: pixel_values, mask_labels, class_labels
        return processor(images=[row["image"] for row in batch], segmentation_maps=[row["panoptic"] for row in batch],
                         segments_info=[row["segments_info"] for row in batch])  # fmt: skip

    torch.manual_seed(0)
    model = EoMTForUniversalSegmentation(EoMTConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=64, num_queries=12, num_blocks=2,
        num_register_tokens=0, id2label=dict(enumerate(CLASS_NAMES)), train_num_points=1024,
    ))  # fmt: skip
    args = TrainingArguments(
        str(tmp_path), max_steps=40, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
        remove_unused_columns=False, report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate,
                      callbacks=[MaskAnnealingCallback()])  # fmt: skip
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"plain Trainer loss: first 5 steps {first:.2f}, last 5 steps {last:.2f}")
    assert len(losses) == 40 and last < 0.85 * first
    assert model.attn_mask_probs.tolist() == [0.0, 0.0]  # annealed: the trained model runs mask-free
    probs = [entry["attn_mask_prob_0"] for entry in trainer.state.log_history if "attn_mask_prob_0" in entry]
    assert probs[0] == 1.0 and probs[-1] == 0.0
