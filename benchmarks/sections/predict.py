"""predict: `eomt predict` per image (`training.inference.predict_files`: reading, pre-processing, model,
post-processing, PNG and JSON writing) in float32 and bfloat16, and the bfloat16 forward alone with the weights
cast instead of autocast (the alternative `prepare_model` does not take).

Our model only (random weights, COCO's panoptic classes, mask-free), on `PREDICT_IMAGES` 3:4 images of
`--image-size`; times per image.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from benchmarks.context import BenchmarkContext
from benchmarks.inputs import random_photos
from benchmarks.measure import Stats, paired_ratios
from benchmarks.registry import Result, register_section
from image_processing import EoMTImageProcessor
from modeling_eomt import EoMTForUniversalSegmentation
from training.inference import predict_files, prepare_model

PREDICT_IMAGES = 4


@register_section("predict", "eomt predict per image, float32 vs bfloat16 (ours only)", in_all=False)
def predict_section(context: BenchmarkContext) -> list[Result]:
    side = context.args.image_size
    torch.manual_seed(context.args.seed)
    model = EoMTForUniversalSegmentation(context.config()).eval()
    model.set_attn_mask_probs(0.0)
    cast_model = copy.deepcopy(model).to(torch.bfloat16)
    processor = EoMTImageProcessor(size=side)
    pixel_values = context.images(1)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        paths = [root / f"{index}.png" for index in range(PREDICT_IMAGES)]
        for path, image in zip(paths, random_photos(PREDICT_IMAGES, side * 3 // 4, side, context.args.seed)):
            image.save(path)

        def predict(dtype: torch.dtype) -> None:  # overwrite: every round segments every image (no resuming)
            predict_files(model, processor, paths, root / str(dtype), "panoptic", device=context.device, dtype=dtype,
                          overwrite=True, progress=False)  # fmt: skip

        def cast_forward() -> None:
            with torch.inference_mode():
                cast_model(pixel_values.bfloat16())

        def autocast_forward() -> None:
            prepare_model(model, context.device, torch.bfloat16)(pixel_values)

        times = context.time(
            {
                "float32": lambda: predict(torch.float32),
                "bfloat16": lambda: predict(torch.bfloat16),
                "autocast forward": autocast_forward,
                "cast forward": cast_forward,
            },
            "predict",
        )
    per_image = {name: [seconds / PREDICT_IMAGES for seconds in times[name]] for name in ("float32", "bfloat16")}
    shape = f"{context.args.size}/16, {side}px, {context.args.queries} queries, {side * 3 // 4}x{side} images"
    return [
        Result("predict", f"per image, float32 ({shape})", Stats.of(per_image["float32"]),
               notes="predict_files: read, pre-process, forward, post-process, write PNGs and JSON"),
        Result("predict", "per image, bfloat16", Stats.of(per_image["bfloat16"]),
               ratio=paired_ratios(times["bfloat16"], times["float32"]),
               notes="--dtype bfloat16 (enable_fast_inference); ratio: bfloat16 / float32"),
        Result("predict", "forward, bfloat16 weights cast", Stats.of(times["cast forward"]),
               ratio=paired_ratios(times["cast forward"], times["autocast forward"]),
               notes="model.to(torch.bfloat16); ratio: cast / autocast (enable_fast_inference)"),
    ]  # fmt: skip
