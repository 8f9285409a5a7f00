"""eval-memory: peak memory of evaluation against the number of images, `EoMTTrainer`'s streaming evaluation
("ours") against `Trainer`'s own loop with `compute_metrics` ("transformers"), which keeps every batch's logits.

Each measurement runs in a fresh process: a random EoMT (hidden 128, 4 layers, `--train-queries` queries) evaluates
`EVAL_IMAGES` generated COCO panoptic images of `--train-image-size` px; the process reports its peak resident
memory (`ru_maxrss`, imports and weights included). The growth from the smaller to the larger count is the memory
that grows with the data set.
"""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

import torch

from benchmarks.context import BenchmarkContext
from benchmarks.measure import Stats, run_in_fresh_process
from benchmarks.registry import Result, register_section

EVAL_IMAGES = (20, 80)
LOOPS = {"ours": "streaming", "reference": "trainer-default"}


def evaluation_peak_memory(loop: str, root: str, images: int, size: int, queries: int) -> int:
    """Run in a fresh process (`run_in_fresh_process`): evaluate and return the peak RSS in bytes."""
    from image_processing import EoMTImageProcessor
    from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
    from training.data import EvalDataset, make_eval_dataset, make_train_dataset
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
            processor = EoMTImageProcessor(size=size, num_labels=info.num_labels)
            trainer = EoMTTrainer(model=model, args=args, eval_dataset=EvalDataset(source), mask_annealing=False,
                                  processing_class=processor)  # fmt: skip
        else:  # the same images as model inputs with targets, through Trainer's loop with compute_metrics
            dataset = make_train_dataset(source, input_size=size, validate=False)
            trainer = EoMTTrainer(model=model, args=args, eval_dataset=dataset, mask_annealing=False,
                                  compute_metrics=lambda prediction: {})  # fmt: skip
        trainer.evaluate()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@register_section("eval-memory", "peak memory of evaluation: streaming vs Trainer's loop", in_all=False)
def eval_memory_section(context: BenchmarkContext) -> list[Result]:
    from training.data import write_synthetic_coco_panoptic

    size, queries = context.args.train_image_size, context.args.train_queries
    peaks: dict[str, list[int]] = {name: [] for name in LOOPS}
    with tempfile.TemporaryDirectory() as folder:
        root = str(write_synthetic_coco_panoptic(Path(folder), 0, 20, size=size, seed=context.args.seed))
        for images in EVAL_IMAGES:
            for name, loop in LOOPS.items():
                arguments = {"loop": loop, "root": root, "images": images, "size": size, "queries": queries}
                peaks[name].append(run_in_fresh_process(f"{__name__}:evaluation_peak_memory", arguments))
    logits_mib = queries * (size // 4) ** 2 * 4 / 2**20
    results = [
        Result("eval-memory", f"peak RSS, {images} images ({size}px, {queries} queries)",
               Stats.of([peaks["ours"][i]]), Stats.of([peaks["reference"][i]]),
               Stats.of([peaks["ours"][i] / peaks["reference"][i]]), unit="bytes",
               notes="EoMTTrainer's streaming evaluation vs Trainer's loop with compute_metrics")
        for i, images in enumerate(EVAL_IMAGES)
    ]  # fmt: skip
    extra = EVAL_IMAGES[-1] - EVAL_IMAGES[0]
    growth = {name: (values[-1] - values[0]) / extra for name, values in peaks.items()}
    results.append(
        Result("eval-memory", "growth per image", Stats.of([growth["ours"]]), Stats.of([growth["reference"]]),
               unit="bytes", notes=f"mask logits: {logits_mib:.2f} MiB per image")
    )  # fmt: skip
    return results
