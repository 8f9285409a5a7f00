"""Training data-loading throughput: decode + augmentation + normalisation, in DataLoader worker processes.

    python -m benchmarks.data_loading [--size 640] [--images 48] [--workers 1] [--color-jitter]

Writes a synthetic COCO panoptic set of `--images` images of `--size` px (in a temporary folder), then prints the
samples per second of `TrainDataset` at input `--size` for each worker count, and the validation pass speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from torch.utils.data import DataLoader

from training.data import AugmentationConfig, load_coco_panoptic, make_train_dataset, validate_dataset
from training.data.synthetic import write_synthetic_coco_panoptic


def samples_per_second(dataset, workers: int, epochs: int) -> float:
    loader = DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=list, persistent_workers=workers > 0)
    next(iter(loader))  # start the workers
    start, count = time.perf_counter(), 0
    for epoch in range(epochs):
        dataset.set_epoch(epoch + 1)
        count += sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--color-jitter", action="store_true", help="add the colour jitter (off in the COCO recipe)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = write_synthetic_coco_panoptic(folder, args.images, 0, size=args.size, seed=0, max_things=8)
        source = load_coco_panoptic(root, "train")
        for decode in (False, True):
            report = validate_dataset(source, decode=decode, progress=False)
            print(f"validation (decode={decode}): {report.num_records / report.seconds:.0f} records/s")
        config = AugmentationConfig(input_size=args.size, scale_range=(0.1, 2.0), color_jitter=args.color_jitter)
        dataset = make_train_dataset(source, augmentation=config, validate=False)
        start = time.perf_counter()
        for index in range(len(source)):
            source[index]
        print(f"decode only (main process): {len(source) / (time.perf_counter() - start):.1f} samples/s")
        for workers in args.workers:
            rate = samples_per_second(dataset, workers, args.epochs)
            print(f"{args.size} px, colour jitter {args.color_jitter}, {workers} worker(s): {rate:.1f} samples/s")


if __name__ == "__main__":
    main()
