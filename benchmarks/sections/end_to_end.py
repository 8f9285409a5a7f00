"""end-to-end: image -> panoptic result (pre-processing, forward, post-processing), fp32 and ours in bf16."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.context import BenchmarkContext, fast_copy
from benchmarks.inputs import random_photos
from benchmarks.registry import Result, register_section


def panoptic_pipeline(processor: Any, model: nn.Module, images: list, device: torch.device) -> Callable[[], list[dict]]:
    """Images -> `processor` -> `model` -> `processor.post_process_panoptic_segmentation`, without gradients."""
    sizes = [(image.height, image.width) for image in images]

    def run() -> list[dict]:
        with torch.inference_mode():
            inputs = processor(images, return_tensors="pt")
            outputs = model(inputs["pixel_values"].to(device))
            return processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes)

    return run


@register_section("end-to-end", "image -> panoptic result (pre-processing, forward, post-processing), batch 1 and 8")
def end_to_end_section(context: BenchmarkContext) -> list[Result]:
    from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

    from image_processing import EoMTImageProcessor

    side = context.args.image_size
    pair = context.inference_pair()
    settings = {"size": {"shortest_edge": side, "longest_edge": side}, "do_pad": True}
    ours_processor, reference_processor = EoMTImageProcessor(**settings), EomtImageProcessorPil(**settings)
    bf16 = fast_copy(pair, torch.bfloat16)
    results = []
    for batch_size in (int(size) for size in context.args.e2e_batch_sizes.split(",")):
        images = random_photos(batch_size, side * 3 // 4, side, context.args.seed)  # COCO-like 4:3, padded to square
        candidates = {
            "ours": panoptic_pipeline(ours_processor, pair.ours, images, context.device),
            "reference": panoptic_pipeline(reference_processor, pair.reference, images, context.device),
            "ours bf16": panoptic_pipeline(ours_processor, bf16, images, context.device),
        }
        ours_maps = [result["segmentation"] for result in candidates["ours"]()]
        reference_maps = [result["segmentation"] for result in candidates["reference"]()]
        agreement = torch.stack([(a == b).float().mean() for a, b in zip(ours_maps, reference_maps)]).mean().item()
        times = context.time(candidates, f"end to end, batch {batch_size}")
        case = f"image -> panoptic, batch {batch_size} ({side * 3 // 4}x{side} images)"
        for name, notes in (
            (
                "ours",
                f"EoMTImageProcessor vs EomtImageProcessorPil, fp32; {agreement:.1%} of pixels agree (random weights)",
            ),
            ("ours bf16", "ours with enable_fast_inference(torch.bfloat16) vs transformers fp32"),
        ):
            results.append(
                Result.timed(
                    "end-to-end",
                    case if name == "ours" else f"{case}, ours bf16",
                    times[name],
                    times["reference"],
                    notes=notes,
                )
            )
    return results
