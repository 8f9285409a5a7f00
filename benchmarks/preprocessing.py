"""Pre-processing speed: `EoMTImageProcessor` vs transformers' `EomtImageProcessorPil`, per image.

    python -m benchmarks.preprocessing [--repeats 20] [--threads 2]

COCO-like 480x640 and ADE20K-like 512x683 RGB images; panoptic (640 square, padded) and semantic (512 windows) set-ups
with the same settings in both. Repetitions are interleaved so that background load hits both; the table reports the
median milliseconds per image and whether both produced the same `pixel_values` (up to float rounding).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

from image_processing import EoMTImageProcessor

SETUPS = {  # name: (image size, settings shared by both processors)
    "panoptic 640, padded": ((480, 640), {"size": {"shortest_edge": 640, "longest_edge": 640}, "do_pad": True}),
    "semantic 512, windows": ((512, 683), {"size": {"shortest_edge": 512, "longest_edge": None}, "do_split_image": True}),
}


def _milliseconds(function, image) -> float:
    start = time.perf_counter()
    function(image)
    return (time.perf_counter() - start) * 1000


def run_preprocessing_benchmark(repeats: int = 20) -> dict[str, dict[str, float | bool]]:
    results = {}
    for name, (size, settings) in tqdm(SETUPS.items(), desc="pre-processing"):
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))
        ours, theirs = EoMTImageProcessor(**settings), EomtImageProcessorPil(**settings)
        run_ours, run_theirs = (lambda x: ours(x)), (lambda x: theirs(x, return_tensors="pt"))
        same = bool(torch.allclose(run_ours(image).pixel_values, run_theirs(image).pixel_values, atol=1e-5))
        times_ours, times_theirs = [], []
        for _ in range(repeats):
            times_ours.append(_milliseconds(run_ours, image))
            times_theirs.append(_milliseconds(run_theirs, image))
        results[name] = {
            "ours_ms": statistics.median(times_ours),
            "transformers_ms": statistics.median(times_theirs),
            "same_pixel_values": same,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run_preprocessing_benchmark(args.repeats)
    print(f"{'set-up':<24}{'ours ms':>10}{'transformers ms':>18}{'ratio':>8}  same pixel_values")
    for name, row in results.items():
        ratio = row["ours_ms"] / row["transformers_ms"]
        print(f"{name:<24}{row['ours_ms']:>10.1f}{row['transformers_ms']:>18.1f}{ratio:>8.2f}  {row['same_pixel_values']}")


if __name__ == "__main__":
    main()
