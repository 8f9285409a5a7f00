"""`eomt predict` speed per image on CPU: float32 vs bfloat16, for a ViT-S EoMT at 640 (random weights).

    python -m benchmarks.predict [--images 4] [--repeats 3] [--threads 1] [--task panoptic] [--size S]

Writes a randomly initialised EoMT (DINOv2 ViT-S/16 shapes, 640 input, 200 queries, COCO's 133 classes, mask-free
inference) and 480x640 images to a temporary directory. Reports CPU milliseconds (see `_milliseconds`), the median
over `--repeats` interleaved rounds after one warm-up round:

- `predict ms`: milliseconds per image of `predict_files` (reading, pre-processing, model, post-processing, PNG and
  JSON writing), float32 and bfloat16 (autocast, what `--dtype bfloat16` does);
- `forward ms`: the model forward alone on one 640x640 input, also with the weights cast to bfloat16 instead of
  autocast (the alternative `prepare_model` does not take).
"""

from __future__ import annotations

import argparse
import copy
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
from training.predict import prepare_model, predict_files

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _milliseconds(function, *args, **kwargs) -> float:
    """CPU milliseconds of this process (all its threads) spent in `function`: with one intra-op thread, what the
    wall time is on an idle machine, and far less disturbed by other processes than the wall time."""
    start = time.process_time()
    function(*args, **kwargs)
    return (time.process_time() - start) * 1000


def run_predict_benchmark(num_images: int, repeats: int, task: str, size: str) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    config = EoMTConfig.from_size(size, image_size=640, num_queries=200, num_register_tokens=4,
                                  id2label=dataset_id2label("coco_panoptic"))  # fmt: skip
    model = EoMTForUniversalSegmentation(config).eval()
    model.set_attn_mask_probs(0.0)
    cast_model = copy.deepcopy(model).to(torch.bfloat16)
    forwards = {
        "float32": prepare_model(model, torch.device("cpu"), torch.float32),
        "bfloat16": prepare_model(model, torch.device("cpu"), torch.bfloat16),
        "bfloat16 weights cast": lambda pixel_values: cast_model(pixel_values.bfloat16()),
    }
    times: dict[str, dict[str, list[float]]] = {name: {"predict": [], "forward": []} for name in forwards}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory, torch.inference_mode():
        root = Path(directory)
        paths = [root / f"{index}.png" for index in range(num_images)]
        for path in paths:
            Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path)
        processor = EoMTImageProcessor(size=640, do_split_image=task == "semantic")
        pixel_values = torch.randn(1, 3, 640, 640)
        for repeat in tqdm(range(repeats + 1), desc="predict benchmark"):  # round 0 warms up
            for name, forward in forwards.items():
                measured = {"forward": _milliseconds(forward, pixel_values)}
                if name in DTYPES:
                    options = dict(dtype=DTYPES[name], progress=False)
                    milliseconds = _milliseconds(predict_files, model, processor, paths, root / name, task, **options)
                    measured["predict"] = milliseconds / num_images
                for key, value in measured.items():
                    if repeat:
                        times[name][key].append(value)
    return {name: {key: statistics.median(values) if values else float("nan") for key, values in row.items()}
            for name, row in times.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: least noise on a shared machine)")
    parser.add_argument("--task", choices=("panoptic", "instance", "semantic"), default="panoptic")
    parser.add_argument("--size", default="S", help="ViT size: S, B, L or g")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run_predict_benchmark(args.images, args.repeats, args.task, args.size)
    print(f"ViT-{args.size} 640, {args.task}, 480x640 images, {args.threads} thread(s), CPU")
    print(f"{'CPU time':<24}{'predict ms':>12}{'forward ms':>12}")
    for name, row in results.items():
        print(f"{name:<24}{row['predict']:>12.0f}{row['forward']:>12.0f}")


if __name__ == "__main__":
    main()
