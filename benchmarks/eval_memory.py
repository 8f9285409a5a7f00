"""Peak memory of evaluation against the number of images: `EoMTTrainer`'s streaming evaluation vs `Trainer`'s own
loop (which keeps every batch's logits when `compute_metrics` is set).

    python -m benchmarks.eval_memory [--size 256] [--queries 100] [--images 20 80]

Each measurement runs in a fresh process: a random EoMT (hidden 128, 4 layers) evaluates `--images` generated COCO
panoptic images of `--size` px; the process reports its peak resident memory (`ru_maxrss`). Prints one row per loop
and image count, and the growth from the smallest to the largest count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def measure(loop: str, root: str, images: int, size: int, queries: int) -> dict:
    """Runs in the child process: evaluate and report the peak RSS in MiB."""
    from image_processing import EoMTImageProcessor
    from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
    from training.data import EvalDataset, make_eval_dataset
    from training.trainer import EoMTTrainer, recipe_training_arguments

    torch.set_num_threads(1)
    source = make_eval_dataset(root, "val").source
    source = source.select([index % len(source) for index in range(images)])
    info = source.info
    torch.manual_seed(0)
    config = EoMTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_blocks=2, image_size=size,
                        num_queries=queries, num_labels=info.num_labels)  # fmt: skip
    model = EoMTForUniversalSegmentation(config)
    with tempfile.TemporaryDirectory() as output_dir:
        args = recipe_training_arguments(output_dir, use_cpu=True, report_to="none", disable_tqdm=True,
                                         per_device_eval_batch_size=4)  # fmt: skip
        if loop == "streaming":
            dataset = EvalDataset(source)
            trainer = EoMTTrainer(model=model, args=args, eval_dataset=dataset, mask_annealing=False,
                                  processing_class=EoMTImageProcessor(size=size, num_labels=info.num_labels))  # fmt: skip
        else:  # the same images as model inputs with targets, through Trainer's loop with compute_metrics
            from training.data import make_train_dataset

            dataset = make_train_dataset(source, input_size=size, validate=False)
            trainer = EoMTTrainer(model=model, args=args, eval_dataset=dataset, mask_annealing=False,
                                  compute_metrics=lambda prediction: {})  # fmt: skip
        trainer.evaluate()
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--images", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        loop, root, images, size, queries = args.child
        print(json.dumps(measure(loop, root, int(images), int(size), int(queries))))
        return

    from training.data import write_synthetic_coco_panoptic

    logits_mib = args.queries * (args.size // 4) ** 2 * 4 / 2**20
    print(f"input {args.size} px, {args.queries} queries: mask logits {logits_mib:.2f} MiB per image")
    with tempfile.TemporaryDirectory() as folder:
        root = str(write_synthetic_coco_panoptic(Path(folder), 0, 20, size=args.size, seed=0))
        for loop in ("streaming", "trainer-default"):
            peaks = []
            for images in args.images:
                command = [sys.executable, "-m", "benchmarks.eval_memory", "--child", loop, root, str(images),
                           str(args.size), str(args.queries)]  # fmt: skip
                result = subprocess.run(command, capture_output=True, text=True, check=True)
                peaks.append(json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"])
                print(f"{loop:>16}: {images:4d} images, peak RSS {peaks[-1]:8.1f} MiB")
            growth = peaks[-1] - peaks[0]
            extra = args.images[-1] - args.images[0]
            print(f"{loop:>16}: growth {growth:+.1f} MiB for {extra} more images ({growth / extra * 1024:+.0f} KiB/image)")


if __name__ == "__main__":
    main()
