"""post-processing: ours (`image_processing.post_processing`) against transformers' `EomtImageProcessorPil`, alone.

Both run on the same synthetic model outputs (`benchmarks.inputs.synthetic_outputs`: `--queries` queries, mask logits
of a `--image-size` input; 133 classes for panoptic / instance with COCO-like image sizes, 150 classes and two sliding
windows per image for semantic), and are checked to give the same maps and segments. The "realistic outputs" rows
run both on busier outputs (`benchmarks.realistic_outputs`: about 40 confident, overlapping blob-shaped queries and
unsure queries that keep some class probability, as a trained model's on a busy scene; 133 classes, semantic without
sliding windows), where the shortcuts for tidy outputs help less.

On a machine busy with other work (more runnable threads than cores), OpenMP's default of spinning idle threads
between parallel regions slows both sides down, ours (many short kernels) far more than transformers (a few huge
ones): run with `OMP_WAIT_POLICY=PASSIVE` there, or with `--clock cpu`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from types import SimpleNamespace

import torch

from benchmarks.context import BenchmarkContext
from benchmarks.inputs import synthetic_outputs, synthetic_window_outputs
from benchmarks.realistic_outputs import realistic_outputs
from benchmarks.registry import Result, register_section
from image_processing.post_processing import post_process_instance, post_process_panoptic, post_process_semantic

BATCH_SIZES = (1, 2)
PANOPTIC_CLASSES, SEMANTIC_CLASSES = 133, 150  # COCO panoptic, ADE20K
PANOPTIC_TARGETS = [(480, 640), (427, 640)]  # COCO-like originals, longest side 640: padded at the bottom
SEMANTIC_TARGETS = [(512, 683), (683, 512)]  # ADE20K-like originals: two 640 windows after shortest-side resize


def _fits_longest(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """transformers' longest-side resize (truncating), the valid region of a padded input."""
    from transformers.image_transforms import get_size_with_aspect_ratio

    return get_size_with_aspect_ratio(size, longest, longest)


def _shortest(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    from transformers.image_transforms import get_size_with_aspect_ratio

    return get_size_with_aspect_ratio(size, shortest, None)


def _same_results(ours: list, theirs: list) -> bool:
    """Same maps and segments (panoptic/instance dicts or semantic maps)."""
    for mine, reference in zip(ours, theirs):
        if isinstance(mine, dict):
            if mine["segments_info"] != reference["segments_info"]:
                return False
            mine, reference = mine["segmentation"], reference["segmentation"]
        if not torch.equal(mine.long(), reference.long()):
            return False
    return True


def _padded_cases(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, input_size: int
) -> Iterator[tuple[str, Callable[[], list], Callable[[], list]]]:
    """`(task, ours, transformers')` panoptic and instance post-processing of outputs for padded `input_size` squares
    of COCO-like images (`PANOPTIC_TARGETS`, longest side resized to `input_size`)."""
    from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

    square = {"shortest_edge": input_size, "longest_edge": input_size}
    reference = EomtImageProcessorPil(size=square, do_pad=True)
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits, patch_offsets=None)
    targets = [PANOPTIC_TARGETS[i % len(PANOPTIC_TARGETS)] for i in range(class_logits.shape[0])]
    geometry = {"input_size": (input_size, input_size), "valid_sizes": [_fits_longest(t, input_size) for t in targets]}
    yield (
        "panoptic",
        partial(post_process_panoptic, class_logits, mask_logits, targets, **geometry),
        partial(reference.post_process_panoptic_segmentation, outputs, targets, size=square),
    )
    yield (
        "instance",
        partial(post_process_instance, class_logits, mask_logits, targets, **geometry),
        partial(reference.post_process_instance_segmentation, outputs, targets, size=square),
    )


def _cases(
    batch_size: int, num_queries: int, input_size: int, seed: int
) -> Iterator[tuple[str, Callable[[], list], Callable[[], list]]]:
    """`(task, ours, transformers')` post-processing calls on the same outputs, for each task."""
    from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

    mask_size = (input_size // 4, input_size // 4)
    class_logits, mask_logits = synthetic_outputs(batch_size, num_queries, PANOPTIC_CLASSES, mask_size, seed=seed)
    yield from _padded_cases(class_logits, mask_logits, input_size)

    semantic_targets = [SEMANTIC_TARGETS[i % len(SEMANTIC_TARGETS)] for i in range(batch_size)]
    resized = [_shortest(target, input_size) for target in semantic_targets]
    class_logits, mask_logits, offsets = synthetic_window_outputs(
        resized, input_size, num_queries, SEMANTIC_CLASSES, seed + 1
    )
    patch_offsets = [torch.tensor(offset) for offset in offsets]
    outputs = SimpleNamespace(
        class_queries_logits=class_logits, masks_queries_logits=mask_logits, patch_offsets=patch_offsets
    )
    square = {"shortest_edge": input_size, "longest_edge": input_size}
    reference = EomtImageProcessorPil(size=square, do_pad=True)
    semantic_size = {"shortest_edge": input_size, "longest_edge": None}
    windows = {"input_size": (input_size, input_size), "patch_offsets": offsets, "resized_sizes": resized}
    yield (
        "semantic",
        partial(post_process_semantic, class_logits, mask_logits, semantic_targets, **windows),
        partial(reference.post_process_semantic_segmentation, outputs, semantic_targets, size=semantic_size),
    )


def _realistic_cases(
    batch_size: int, num_queries: int, input_size: int, seed: int
) -> Iterator[tuple[str, Callable[[], list], Callable[[], list]]]:
    """`(task, ours, transformers')` on the same `realistic_outputs`: panoptic and instance on padded inputs of
    COCO-like images (as `_cases`), semantic on unpadded `input_size` squares (transformers removes no padding without
    sliding windows)."""
    from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

    square = {"shortest_edge": input_size, "longest_edge": input_size}
    mask_size = (input_size // 4, input_size // 4)
    class_logits, mask_logits = realistic_outputs(batch_size, num_queries, PANOPTIC_CLASSES, mask_size, seed=seed)
    yield from _padded_cases(class_logits, mask_logits, input_size)
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits, patch_offsets=None)
    squares = [(input_size, input_size)] * batch_size
    yield (
        "semantic",
        partial(post_process_semantic, class_logits, mask_logits, squares, input_size=(input_size, input_size)),
        partial(EomtImageProcessorPil(size=square).post_process_semantic_segmentation, outputs, squares, size=square),
    )


@register_section("post-processing", "post-processing alone, each task, ours vs transformers on the same outputs")
def post_processing_section(context: BenchmarkContext) -> list[Result]:
    results = []
    args = context.args
    for outputs, cases in (("", _cases), (", realistic outputs", _realistic_cases)):
        for batch_size in BATCH_SIZES:
            for task, ours, theirs in cases(batch_size, args.queries, args.image_size, args.seed):
                results.append(_timed_case(context, f"{task}{outputs}, batch {batch_size}", ours, theirs))
    return results


def _timed_case(context: BenchmarkContext, case: str, ours: Callable[[], list], theirs: Callable[[], list]) -> Result:
    same = _same_results(ours(), theirs())
    times = context.time({"ours": ours, "reference": theirs}, f"post-processing, {case}")
    return Result.timed(
        "post-processing",
        case,
        times["ours"],
        times["reference"],
        notes=f"same output: {'yes' if same else 'NO'}",
    )
