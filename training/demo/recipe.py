"""What the demo trains: the data set, the model, the schedule (`DemoRecipe`) and the ablation's variants (`Variant`).

The defaults were chosen from measurements on 2 CPU cores (see `DemoRecipe`); `EoMTTrainer` does the training with
the project's loss, optimizer groups, two-stage warm-up and mask annealing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import ProgressCallback

from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation

from ..data import (
    AugmentationConfig,
    DatasetInfo,
    load_coco_panoptic,
    make_eval_dataset,
    make_train_dataset,
    write_synthetic_coco_panoptic,
)
from ..recipe import SCRATCH_BACKBONE_WARMUP_FRACTION
from ..run import build_processor
from ..trainer import EoMTTrainer, recipe_training_arguments


@dataclass(frozen=True)
class DemoRecipe:
    """The demo's data set, model and schedule.

    Data (`training.data.write_synthetic_coco_panoptic`): `num_train` / `num_val` generated `image_size` x
    `image_size` scenes of the given `difficulty` (pixel noise, colour variation, number and size of things, void
    distractors).

    Model (`EoMTConfig` fields, random initialisation): a ViT of `hidden_size` x `num_hidden_layers` with
    `num_attention_heads`, `patch_size`, `num_queries` queries joining in the last `num_blocks` blocks (masked
    attention there during training) and `num_upscale_blocks` 2x upscaling blocks (masks at 1/4 of the input for patch
    16); `num_points` sampled points per mask in the matcher and the loss.

    Schedule (`EoMTTrainer`): `steps` optimizer steps of `batch_size` crops (large-scale jitter over `scale_range`,
    random flips), AdamW with `learning_rate` and layer-wise decay `layer_decay` (1: none), the two-stage warm-up over
    the first `head_warmup` and then `backbone_warmup` fractions of the steps, and the paper's mask-annealing schedule
    (block `i` of `n` anneals during `[(i + 1) / (n + 2), (i + 2) / (n + 2)]` of training, all 0 at the end).

    Why these defaults (measured with one torch thread on a 2-core x86-64 machine):
    - 128 px scenes, patch 16, 2 upscale blocks: the authors' geometry (8x8 patch grid, 32x32 mask logits, all of
      whose pixels `num_points` covers); 64 px with patch 8 learns as well but its overlays are hard to read.
    - difficulty 0.5: up to 5 things among 2-4 stuff regions, noisy, with void blobs; PQ 79-80 at 0.3 and at 0.5.
    - 6 blocks 128 wide, 16 queries (scenes have at most 9 segments), masked attention in the last 2 blocks (the
      paper: 4 of 24); a training step of 8 crops takes about 0.25 s of CPU time.
    - lr 1e-3 without layer decay: the backbone starts from random weights (the authors' 1e-4, layer decay 0.8 and
      500 + 1000 warm-up steps suit a pre-trained one); milder scale jitter than COCO's 0.1-2.0.
    - the backbone warms up over the first 20% of the steps, as in `eomt train`'s from-scratch recipe
      (`training.recipe`): mask-free PQ 80.05 / 81.10 / 80.36 (seeds 0, 1, 2) against 78.55 / 80.52 / 78.45 at full
      rate from the start (Intel Xeon with AMX, 2026-12-06). Clipping at 1.0 instead of the authors' 0.01 gave
      79.70 / 80.09 / 79.53 alone and 80.71 / 81.23 / 78.87 with the warm-up, so the clipping stays.
    - 1000 steps: about 4.5 minutes of CPU time for the whole command; 1500 steps gave no more (79.8 against 80.0,
      before the backbone warm-up). bfloat16 autocast changed the step time by under 5%.
    """

    image_size: int = 128
    num_train: int = 600
    num_val: int = 100
    difficulty: float = 0.5

    hidden_size: int = 128
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    patch_size: int = 16
    num_queries: int = 16
    num_blocks: int = 2
    num_upscale_blocks: int = 2
    num_points: int = 1024

    steps: int = 1000
    batch_size: int = 8
    learning_rate: float = 1e-3
    layer_decay: float = 1.0
    head_warmup: float = 0.05
    backbone_warmup: float = SCRATCH_BACKBONE_WARMUP_FRACTION
    scale_range: tuple[float, float] = (0.5, 1.5)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size must be a multiple of the patch size {self.patch_size}, got {self.image_size}")
        if self.steps < 1 or self.num_train < 1 or self.num_val < 1:
            raise ValueError(f"steps, num_train and num_val must be positive, got {self.steps}, {self.num_train}, "
                             f"{self.num_val}")  # fmt: skip

    @classmethod
    def quick(cls) -> DemoRecipe:
        """A run of seconds that exercises every part (used by the tests); its model learns little."""
        return cls(image_size=32, num_train=16, num_val=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   num_queries=8, num_blocks=1, num_points=64, steps=6, batch_size=4)  # fmt: skip

    def replace(self, **changes: Any) -> DemoRecipe:
        """A copy with `changes` (None values are ignored)."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    def summary(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Variant:
    """How masked attention is used: its probability at the start of training (`initial_probability`), whether mask
    annealing lowers it to 0 during training, and whether inference keeps it (every masked block at 1)."""

    name: str
    title: str
    initial_probability: float
    annealing: bool
    masked_inference: bool


ANNEALED = Variant("annealed", "mask annealing, mask-free inference", 1.0, annealing=True, masked_inference=False)
MASKED = Variant("masked", "masked attention, kept at inference", 1.0, annealing=False, masked_inference=True)
MASK_FREE = Variant("mask_free", "no masked attention", 0.0, annealing=False, masked_inference=False)
ABLATION = (MASKED, ANNEALED, MASK_FREE)  # the paper's central experiment, in its order


def write_demo_data(root: str | Path, recipe: DemoRecipe, seed: int) -> Path:
    """The demo's synthetic data set (COCO panoptic layout) at `root`."""
    return write_synthetic_coco_panoptic(
        root, recipe.num_train, recipe.num_val, size=recipe.image_size, seed=seed, difficulty=recipe.difficulty
    )


def demo_model(recipe: DemoRecipe, info: DatasetInfo, seed: int) -> EoMTForUniversalSegmentation:
    """A randomly initialised EoMT of the recipe's shape for the classes of `info`."""
    torch.manual_seed(seed)
    config = EoMTConfig(
        hidden_size=recipe.hidden_size, num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads, patch_size=recipe.patch_size, image_size=recipe.image_size,
        num_register_tokens=0, num_queries=recipe.num_queries, num_blocks=recipe.num_blocks,
        num_upscale_blocks=recipe.num_upscale_blocks, train_num_points=recipe.num_points,
        id2label=dict(info.id2label), label2id=info.label2id,
    )  # fmt: skip
    return EoMTForUniversalSegmentation(config)


class DemoProgress(ProgressCallback):
    """One tqdm bar per training run, with the latest loss and masked-attention probabilities as its postfix instead
    of a printed line per log."""

    def __init__(self, description: str) -> None:
        super().__init__()
        self.description = description

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(self.description)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is None or not logs or "loss" not in logs:
            return
        probs = [value for key, value in sorted(logs.items()) if key.startswith("attn_mask_prob_")]
        postfix = {"loss": f"{logs['loss']:.2f}"}
        if probs:
            postfix["mask p"] = "/".join(f"{p:.2f}" for p in probs)
        self.training_bar.set_postfix(postfix, refresh=False)


def demo_trainer(
    recipe: DemoRecipe, data_dir: str | Path, output_dir: str | Path, seed: int, variant: Variant = ANNEALED,
    progress: bool = True,
) -> EoMTTrainer:
    """An `EoMTTrainer` for `variant` on the data set at `data_dir` (its `val` split as the evaluation set), ready to
    `train()`; nothing is written to `output_dir` unless asked (no checkpoints)."""
    source = load_coco_panoptic(data_dir, "train")
    info = source.info
    augmentation = AugmentationConfig(input_size=recipe.image_size, scale_range=recipe.scale_range, color_jitter=False)
    train_dataset = make_train_dataset(source, seed=seed, augmentation=augmentation)
    model = demo_model(recipe, info, seed)
    model.set_attn_mask_probs(variant.initial_probability)
    args = recipe_training_arguments(
        str(output_dir), learning_rate=recipe.learning_rate, per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=16, max_steps=recipe.steps, logging_steps=max(1, recipe.steps // 100),
        use_cpu=True, seed=seed, save_strategy="no", report_to="none", disable_tqdm=not progress,
        dataloader_num_workers=1, dataloader_persistent_workers=True, dataloader_pin_memory=False,
    )  # fmt: skip
    trainer = EoMTTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=make_eval_dataset(data_dir, "val"),
        processing_class=build_processor(info, recipe.image_size),
        layer_decay=recipe.layer_decay, head_warmup_steps=round(recipe.head_warmup * recipe.steps),
        backbone_warmup_steps=round(recipe.backbone_warmup * recipe.steps), mask_annealing=variant.annealing, eval_loss=False,
    )  # fmt: skip
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(DemoProgress(f"training ({variant.name})"))
    return trainer
