"""Speed of the streaming metrics: PQ update per image, MeanIoU update per image, MaskAP compute.

    python benchmarks/metrics_speed.py [--threads 1]

Prints one line per measurement (best of several runs: the machine may be shared; milliseconds or seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.metrics import MaskAP, MeanIoU, PanopticQuality  # noqa: E402


def best_seconds(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def voronoi_map(generator: torch.Generator, size: int, num_segments: int) -> torch.Tensor:
    """`(size, size)` map of `num_segments` nearest-seed regions, ids 1..num_segments."""
    seeds = torch.rand(num_segments, 2, generator=generator) * size
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    distance = (ys[None] - seeds[:, 0, None, None]) ** 2 + (xs[None] - seeds[:, 1, None, None]) ** 2
    return distance.argmin(0) + 1


def bench_panoptic_quality(size: int = 640, num_segments: int = 30, num_labels: int = 133) -> float:
    generator = torch.Generator().manual_seed(0)
    target, pred = voronoi_map(generator, size, num_segments), voronoi_map(generator, size, num_segments) - 1
    target[: size // 16] = 0  # some void
    target_info = [{"id": i, "category_id": i % num_labels, "iscrowd": int(i == 3)} for i in range(1, num_segments + 1)]
    pred_info = [{"id": i, "label_id": i % num_labels} for i in range(num_segments)]
    metric = PanopticQuality(num_labels, thing_ids=range(80))
    return best_seconds(lambda: metric.update(pred, pred_info, target, target_info), repeats=30)


def bench_mean_iou(size: int = 512, num_labels: int = 150) -> float:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, num_labels, (size, size), generator=generator)
    target[: size // 16] = 255
    pred = torch.randint(0, num_labels, (size, size), generator=generator)
    metric = MeanIoU(num_labels)
    return best_seconds(lambda: metric.update(pred, target), repeats=30)


def bench_mask_ap(num_images: int = 100, detections: int = 100, size: int = 320, num_labels: int = 80) -> tuple:
    """Seconds per `update` (RLE encoding) and for one `compute` (COCOeval), best of three computes."""
    rng = np.random.default_rng(0)
    metric = MaskAP(num_labels)
    update_seconds = 0.0
    for _ in tqdm(range(num_images), desc="MaskAP update", leave=False):
        num_targets = int(rng.integers(5, 15))
        boxes = rng.integers(0, size, (detections, 4))
        masks = torch.zeros(detections, size, size, dtype=torch.bool)
        for mask, (y0, x0, y1, x1) in zip(masks, boxes):
            mask[min(y0, y1) : max(y0, y1) + 8, min(x0, x1) : max(x0, x1) + 8] = True
        labels = torch.from_numpy(rng.integers(0, num_labels, detections))
        scores = torch.from_numpy(rng.random(detections))
        start = time.perf_counter()
        metric.update(masks, scores, labels, masks[:num_targets], labels[:num_targets])
        update_seconds += time.perf_counter() - start
    return update_seconds / num_images, best_seconds(metric.compute, repeats=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)")
    print(f"PanopticQuality.update, 640x640, 30 segments: {1000 * bench_panoptic_quality():.2f} ms/image")
    print(f"MeanIoU.update, 512x512, 150 classes:        {1000 * bench_mean_iou():.2f} ms/image")
    update, compute = bench_mask_ap()
    print(f"MaskAP.update, 320x320, 100 predictions:       {1000 * update:.1f} ms/image (RLE encoding)")
    print(f"MaskAP.compute, 100 images x 100 predictions:  {compute:.2f} s")


if __name__ == "__main__":
    main()
