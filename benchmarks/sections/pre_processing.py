"""pre-processing: `EoMTImageProcessor` against transformers' `EomtImageProcessorPil`, one image at a time.

A COCO-like 480x640 image with the panoptic set-up (longest side to 640, padded to the square) and an ADE20K-like
512x683 image with the semantic one (shortest side to 512, sliding windows), with the same settings on both sides;
the notes say whether both produced the same `pixel_values` (up to float rounding). The sizes are fixed: where a
resized side is not a whole number, ours rounds it (as the authors do) and transformers truncates, and the inputs
differ by a pixel.
"""

from __future__ import annotations

import torch

from benchmarks.context import BenchmarkContext
from benchmarks.inputs import random_photos
from benchmarks.registry import Result, register_section
from image_processing import EoMTImageProcessor


SETUPS = {  # name: (image height and width, the settings both processors get)
    "panoptic 640, padded": ((480, 640), {"size": {"shortest_edge": 640, "longest_edge": 640}, "do_pad": True}),
    "semantic 512, windows": (
        (512, 683), {"size": {"shortest_edge": 512, "longest_edge": None}, "do_split_image": True}
    ),
}


@register_section("pre-processing", "pre-processing of one image, ours vs transformers", in_all=False)
def pre_processing_section(context: BenchmarkContext) -> list[Result]:
    from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

    results = []
    for name, ((height, width), settings) in SETUPS.items():
        (image,) = random_photos(1, height, width, context.args.seed)
        ours, theirs = EoMTImageProcessor(**settings), EomtImageProcessorPil(**settings)
        candidates = {"ours": lambda: ours(image), "reference": lambda: theirs(image, return_tensors="pt")}
        same = torch.allclose(candidates["ours"]().pixel_values, candidates["reference"]().pixel_values, atol=1e-5)
        times = context.time(candidates, f"pre-processing, {name}")
        results.append(
            Result.timed(
                "pre-processing",
                f"{name} ({height}x{width} image)",
                times["ours"],
                times["reference"],
                notes=f"same pixel_values: {'yes' if same else 'NO'}",
            )
        )
    return results
