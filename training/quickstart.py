"""The no-download smoke run: build a small random EoMT, segment a generated image, write the result as PNG."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from image_processing.post_processing import semantic_segmentation
from image_processing.transforms import normalize_image
from image_processing.visualization import draw_segmentation
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from training.data.synthetic import CLASS_NAMES, synthetic_scene

def run_quickstart(output_dir: str | Path, image_size: int = 128, seed: int = 0) -> dict:
    """Segment one synthetic image with an untrained small EoMT (ViT, 4 layers, 64 wide); write the overlay
    (`quickstart.png`) and the model (`model/`, reloaded to check the round trip). Returns a summary."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = EoMTConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_blocks=2, image_size=image_size,
        patch_size=16, num_queries=20, num_register_tokens=4,
        id2label=dict(enumerate(CLASS_NAMES)), label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )  # fmt: skip
    model = EoMTForUniversalSegmentation(config).eval()
    model.set_attn_mask_probs(0.0)  # mask-free inference, as after mask annealing

    scene = synthetic_scene(seed, size=image_size)
    pixel_values = normalize_image(np.asarray(scene.image))[None]
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = model(pixel_values)
    seconds = time.perf_counter() - start
    segmentation = semantic_segmentation(outputs.class_queries_logits, outputs.masks_queries_logits, (image_size, image_size))[0]

    model_dir = output_dir / "model"
    model.save_pretrained(model_dir)
    reloaded = EoMTForUniversalSegmentation.from_pretrained(model_dir).eval()
    reloaded.set_attn_mask_probs(0.0)
    with torch.inference_mode():
        same = torch.equal(reloaded(pixel_values).masks_queries_logits, outputs.masks_queries_logits)

    overlay = draw_segmentation(scene.image, segmentation.numpy(), config.id2label, output_dir / "quickstart.png")
    counts = {config.id2label[int(k)]: int(v) for k, v in zip(*torch.unique(segmentation, return_counts=True))}
    return {
        "class_logits_shape": tuple(outputs.class_queries_logits.shape),
        "mask_logits_shape": tuple(outputs.masks_queries_logits.shape),
        "forward_seconds": seconds,
        "pixels_per_class": counts,
        "reload_identical": same,
        "overlay": str(output_dir / "quickstart.png"),
        "overlay_size": overlay.size,
        "model_dir": str(model_dir),
    }
