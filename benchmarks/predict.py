"""`eomt predict` speed per image on CPU: float32 vs bfloat16, for a ViT-S EoMT at 640 (random weights).

    python -m benchmarks.predict [--images 4] [--repeats 2] [--threads 2] [--task panoptic] [--size S]

Writes a randomly initialised EoMT (DINOv2 ViT-S/16 shapes, 640 input, 200 queries, COCO's 133 classes, mask-free
inference) and 480x640 images to a temporary directory, then runs `predict_files` (reading, pre-processing, model,
post-processing, PNG and JSON writing) once per dtype to warm up and `--repeats` times more, interleaved so that
background load hits both. Reports the median milliseconds per image of the whole loop and of the model forward alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from image_processing import EoMTImageProcessor
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from modeling_eomt.labels import dataset_id2label
from training.predict import DTYPES, prepare_model, predict_files


def _forward_ms(model: EoMTForUniversalSegmentation, pixel_values: torch.Tensor, dtype: torch.dtype) -> float:
    forward = prepare_model(model, torch.device("cpu"), dtype)
    start = time.perf_counter()
    forward(pixel_values)
    return (time.perf_counter() - start) * 1000


def run_predict_benchmark(num_images: int, repeats: int, task: str, size: str) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    config = EoMTConfig.from_size(size, image_size=640, num_queries=200, num_register_tokens=4,
                                  id2label=dataset_id2label("coco_panoptic"))  # fmt: skip
    rng = np.random.default_rng(0)
    times: dict[str, dict[str, list[float]]] = {
        name: {"predict": [], "forward": []} for name in ("float32", "bfloat16")
    }
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        paths = []
        for index in range(num_images):
            paths.append(root / f"{index}.png")
            Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(paths[-1])
        processor = EoMTImageProcessor(size=640, do_split_image=task == "semantic")
        pixel_values = processor(Image.open(paths[0]))["pixel_values"]
        for repeat in tqdm(range(repeats + 1), desc="predict benchmark"):
            for name in times:
                model = EoMTForUniversalSegmentation(config).eval()  # fresh float32 weights for every run
                model.attn_mask_probs.zero_()
                start = time.perf_counter()
                predict_files(model, processor, paths, root / name, task, dtype=DTYPES[name], progress=False)
                per_image = (time.perf_counter() - start) * 1000 / num_images
                forward = _forward_ms(model, pixel_values, DTYPES[name])
                if repeat > 0:  # the first round warms up
                    times[name]["predict"].append(per_image)
                    times[name]["forward"].append(forward)
    return {name: {key: statistics.median(values) for key, values in row.items()} for name, row in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task", choices=("panoptic", "instance", "semantic"), default="panoptic")
    parser.add_argument("--size", default="S", help="ViT size: S, B, L or g")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run_predict_benchmark(args.images, args.repeats, args.task, args.size)
    print(f"ViT-{args.size} 640, {args.task}, 480x640 images, {args.threads} threads, CPU")
    print(f"{'dtype':<10}{'ms / image':>12}{'forward ms':>12}")
    for name, row in results.items():
        print(f"{name:<10}{row['predict']:>12.0f}{row['forward']:>12.0f}")


if __name__ == "__main__":
    main()
