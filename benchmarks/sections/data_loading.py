"""data-loading: the training data pipeline per sample: validation pass, decoding, and decoding + the recipe's
augmentation in a DataLoader with 0 and 1 worker processes.

A synthetic COCO panoptic set of `DATA_IMAGES` images of `--image-size` px (in a temporary folder), read with
`training.data` as `eomt train` reads COCO. With `--clock cpu` the worker processes' time is not counted: use the
wall clock here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from torch.utils.data import DataLoader, Dataset

from benchmarks.context import BenchmarkContext
from benchmarks.measure import Stats
from benchmarks.registry import Result, register_section
from training.data import load_coco_panoptic, make_train_dataset, validate_dataset
from training.data.synthetic import write_synthetic_coco_panoptic

DATA_IMAGES = 48
WORKERS = (0, 1)


def epoch_function(dataset: Dataset, workers: int) -> Callable[[], int]:
    """One epoch through a DataLoader (batches of 4) with `workers` persistent worker processes; returns the count."""
    loader = DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=list, persistent_workers=workers > 0)
    epochs = iter(range(1, 1_000_000))

    def epoch() -> int:
        dataset.set_epoch(next(epochs))
        return sum(len(batch) for batch in loader)

    return epoch


@register_section("data-loading", "training data per sample: validation, decoding, augmentation", in_all=False)
def data_loading_section(context: BenchmarkContext) -> list[Result]:
    size = context.args.image_size
    with tempfile.TemporaryDirectory() as folder:
        root = write_synthetic_coco_panoptic(folder, DATA_IMAGES, 0, size=size, seed=context.args.seed, max_things=8)
        source = load_coco_panoptic(root, "train")
        dataset = make_train_dataset(source, input_size=size, seed=context.args.seed, validate=False)
        candidates = {
            "validation": lambda: validate_dataset(source, progress=False),
            "validation, decoded": lambda: validate_dataset(source, decode=True, progress=False),
            "decoding": lambda: [source[index] for index in range(len(source))],
            **{f"{workers} worker(s)": epoch_function(dataset, workers) for workers in WORKERS},
        }
        times = context.time(candidates, "data loading")
    notes = {
        "validation": "validate_dataset: every record read, images streamed through the decoder (JPEG at 1/8)",
        "validation, decoded": "validate_dataset(decode=True): every record read, images decoded",
        "decoding": "source[i]: image and panoptic PNG decoded, targets built (main process)",
        **{f"{workers} worker(s)": "decoding + the recipe's augmentation, DataLoader" for workers in WORKERS},
    }
    per_sample = {name: Stats.of([seconds / DATA_IMAGES for seconds in times[name]]) for name in candidates}
    return [
        Result("data-loading", f"{name}, per sample ({size}px images)", per_sample[name], notes=notes[name])
        for name in candidates
    ]
