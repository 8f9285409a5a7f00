"""metrics: the streaming metrics' cost, `PanopticQuality` and `MeanIoU` update per image, `MaskAP` update per image
and its `compute` (COCOeval) over `MASK_AP_IMAGES` images of 100 predictions, at `--image-size` (mask AP at half)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from benchmarks.context import BenchmarkContext
from benchmarks.measure import Stats
from benchmarks.registry import Result, register_section
from training.metrics import MaskAP, MeanIoU, PanopticQuality

PANOPTIC_CLASSES, PANOPTIC_SEGMENTS = 133, 30  # COCO panoptic
SEMANTIC_CLASSES = 150  # ADE20K
INSTANCE_CLASSES, MASK_AP_IMAGES, DETECTIONS = 80, 100, 100  # COCO instance


def voronoi_map(generator: torch.Generator, size: int, num_segments: int) -> torch.Tensor:
    """`(size, size)` map of `num_segments` nearest-seed regions, ids 1..num_segments."""
    seeds = torch.rand(num_segments, 2, generator=generator) * size
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    distance = (ys[None] - seeds[:, 0, None, None]) ** 2 + (xs[None] - seeds[:, 1, None, None]) ** 2
    return distance.argmin(0) + 1


def panoptic_update(size: int, seed: int) -> Callable[[], None]:
    """One image's `PanopticQuality.update`: Voronoi segment maps, some void."""
    generator = torch.Generator().manual_seed(seed)
    target, pred = voronoi_map(generator, size, PANOPTIC_SEGMENTS), voronoi_map(generator, size, PANOPTIC_SEGMENTS) - 1
    target[: size // 16] = 0  # some void
    target_info = [{"id": i, "category_id": i % PANOPTIC_CLASSES, "iscrowd": int(i == 3)}
                   for i in range(1, PANOPTIC_SEGMENTS + 1)]  # fmt: skip
    pred_info = [{"id": i, "label_id": i % PANOPTIC_CLASSES} for i in range(PANOPTIC_SEGMENTS)]
    metric = PanopticQuality(PANOPTIC_CLASSES, thing_ids=range(80))
    return lambda: metric.update(pred, pred_info, target, target_info)


def mean_iou_update(size: int, seed: int) -> Callable[[], None]:
    """One image's `MeanIoU.update`: random class maps, some ignored pixels."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, SEMANTIC_CLASSES, (size, size), generator=generator)
    target[: size // 16] = 255
    pred = torch.randint(0, SEMANTIC_CLASSES, (size, size), generator=generator)
    metric = MeanIoU(SEMANTIC_CLASSES)
    return lambda: metric.update(pred, target)


def mask_ap_inputs(rng: np.random.Generator, size: int) -> tuple[torch.Tensor, ...]:
    """One image's `DETECTIONS` rectangle masks `(D, size, size)`, labels, scores and 5-15 of them as the targets."""
    num_targets = int(rng.integers(5, 15))
    boxes = rng.integers(0, size, (DETECTIONS, 4))
    masks = torch.zeros(DETECTIONS, size, size, dtype=torch.bool)
    for mask, (y0, x0, y1, x1) in zip(masks, boxes):
        mask[min(y0, y1) : max(y0, y1) + 8, min(x0, x1) : max(x0, x1) + 8] = True
    labels = torch.from_numpy(rng.integers(0, INSTANCE_CLASSES, DETECTIONS))
    scores = torch.from_numpy(rng.random(DETECTIONS))
    return masks, scores, labels, masks[:num_targets], labels[:num_targets]


@register_section("metrics", "streaming metrics: update per image (PQ, mIoU, mask AP), mask AP compute", in_all=False)
def metrics_section(context: BenchmarkContext) -> list[Result]:
    size, seed = context.args.image_size, context.args.seed
    times = context.time({"pq": panoptic_update(size, seed), "miou": mean_iou_update(size, seed)}, "metric updates")
    rng = np.random.default_rng(seed)
    images = [mask_ap_inputs(rng, size // 2) for _ in range(MASK_AP_IMAGES)]
    timed = MaskAP(INSTANCE_CLASSES)
    update_times = context.time({"update": lambda: timed.update(*images[0])}, "MaskAP update")
    mask_ap = MaskAP(INSTANCE_CLASSES)
    for image in images:
        mask_ap.update(*image)
    compute_times = context.time({"compute": mask_ap.compute}, "MaskAP compute")
    return [
        Result("metrics", f"PanopticQuality.update, {size}x{size}, {PANOPTIC_SEGMENTS} segments",
               Stats.of(times["pq"]), notes="per image"),
        Result("metrics", f"MeanIoU.update, {size}x{size}, {SEMANTIC_CLASSES} classes", Stats.of(times["miou"]),
               notes="per image"),
        Result("metrics", f"MaskAP.update, {size // 2}x{size // 2}, {DETECTIONS} predictions",
               Stats.of(update_times["update"]), notes="per image (RLE encoding)"),
        Result("metrics", f"MaskAP.compute, {MASK_AP_IMAGES} images x {DETECTIONS} predictions",
               Stats.of(compute_times["compute"]), notes="COCOeval"),
    ]  # fmt: skip
