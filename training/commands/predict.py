"""`eomt predict`: segment image files with an EoMT checkpoint; write overlays and COCO-format results.

The arguments become a model, a processor, the images (`training.prediction_inputs`, walked lazily) and options here;
`training.inference.run_predictions` does the work and documents the files it writes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from training.commands.arguments import (
    INPUT_ERROR_STATUS,
    InputError,
    add_conversion_arguments,
    add_model_argument,
    conversion_overrides,
    is_main_process,
    load_model,
    report_error,
    resolve_device,
)

report = partial(report_error, "predict")


SOME_INPUTS_FAILED_STATUS = 3
"""Exit status of a run that wrote every image it could but skipped some inputs (each reported on one line)."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="segment image files; write overlays and COCO-format results",
        description="Segment images with an EoMT checkpoint (this package's or transformers' format, or the authors' "
        "original .bin/.ckpt, converted on the fly). Writes OUT/overlays/*.png and OUT/predictions.json, plus "
        "OUT/panoptic/*.png (COCO panoptic PNGs) or OUT/semantic/*.png (class-index PNGs), and OUT/run.json and "
        "OUT/records/ that make the run resumable: rerun the same command to finish an interrupted run (images done "
        "are skipped). Under `accelerate launch` / `torchrun` the processes share the images out and write one "
        "result. Exit status: 0 every image done, 3 some inputs unusable (each reported; the others done), 2 unusable "
        "model, device, option or output folder (nothing done).",
    )
    add_model_argument(predict)
    predict.add_argument("images", nargs="*", help="image files, directories, or glob patterns (quoted)")
    predict.add_argument("--task", choices=("panoptic", "instance", "semantic"), default="panoptic")
    predict.add_argument("--out", default="outputs/predict", help="output directory (default: outputs/predict)")
    predict.add_argument(
        "--overwrite", action="store_true",
        help="remove the results of an earlier run in --out first (by default a run with the same settings resumes it, "
        "and other settings are an error)",
    )  # fmt: skip
    predict.add_argument("--recursive", action="store_true", help="also images in sub-directories (and ** in globs)")
    predict.add_argument(
        "--hf-dataset", metavar="NAME_OR_PATH",
        help="also segment a datasets split, streamed: Hub id, data folder or save_to_disk folder",
    )  # fmt: skip
    predict.add_argument("--split", help="--hf-dataset: the split (default: the only one)")
    predict.add_argument("--image-column", default="image", help="--hf-dataset: the image column (default: image)")
    predict.add_argument(
        "--name-column", help="--hf-dataset: the column naming each image (default: the row number, 00000000 on)"
    )
    predict.add_argument("--batch-size", type=int, default=1, help="images per forward pass, of any sizes (default: 1)")
    predict.add_argument(
        "--device", default="cpu", help="cpu (default), cuda, cuda:N or mps; cuda under several processes: one GPU each"
    )
    predict.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
        help="float32 (default), or autocast to bfloat16 (about 1.6x faster on CPUs with AVX-512 BF16 or AMX, many "
        "times slower on CPUs without) or float16 (GPUs; slow on CPU)",
    )  # fmt: skip
    predict.add_argument("--threshold", type=float, help="panoptic, instance: min. class score (default: the model's, "
                         "0.8 unless eomt train chose another)")  # fmt: skip
    predict.add_argument("--mask-threshold", type=float, default=0.5, help="panoptic: mask probability (default: 0.5)")
    predict.add_argument(
        "--overlap-threshold", type=float,
        help="panoptic: fraction of its mask a segment must keep (default: the model's, 0.8 unless eomt train chose "
        "another)",
    )  # fmt: skip
    predict.add_argument(
        "--stuff-classes",
        help="panoptic: class indices fused into one segment per image, comma-separated, or 'none' "
        "(default: the processor's; COCO's for COCO's panoptic classes)",
    )
    add_conversion_arguments(predict, original_only="original checkpoints: ")
    predict.set_defaults(run=run)


def parse_stuff_classes(text: str, num_labels: int) -> list[int]:
    """`--stuff-classes`: comma-separated class indices in `[0, num_labels)`, or `none` (every class is a thing)."""
    if text.strip().lower() == "none":
        return []
    try:
        classes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--stuff-classes {text!r}: expected comma-separated class indices or 'none'") from None
    outside = [label for label in classes if not 0 <= label < num_labels]
    if outside:
        raise InputError(f"--stuff-classes: {outside} are not class indices of this model (0 to {num_labels - 1})")
    return classes


def _process_device(device: Any, processes: Any) -> Any:
    """`--device cuda` under several processes: the GPU of this process's local rank."""
    import torch

    if device.type != "cuda" or device.index is not None or processes.world_size == 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", processes.rank))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _dataset_input(args: argparse.Namespace) -> tuple[Any, Any]:
    """`--hf-dataset` as a `DatasetInput` and its opened split (None, None without it)."""
    from training.prediction_inputs import DatasetInput, open_dataset

    if args.hf_dataset is None:
        return None, None
    spec = DatasetInput(args.hf_dataset, args.split, args.image_column, args.name_column)
    try:
        return spec, open_dataset(spec)
    except ValueError as error:
        raise InputError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every image was processed, `SOME_INPUTS_FAILED_STATUS` when some input could not be used
    (the others are processed); an unusable model, device, option or output folder is an `InputError` (exit status
    2, nothing processed). Every process of a launch returns the same status; process 0 alone prints the error."""
    try:
        return _run(args)
    except InputError:
        if is_main_process():
            raise
        return INPUT_ERROR_STATUS


def _run(args: argparse.Namespace) -> int:
    import torch

    from training.inference import OutputConflictError, load_processor, run_predictions
    from training.prediction_inputs import input_problem, iter_dataset_images, iter_images
    from training.prediction_store import launched_processes

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: exists and is not a directory")
    if not args.images and args.hf_dataset is None:
        raise InputError("no images given: name image files, directories or patterns, or --hf-dataset")
    device = resolve_device(args.device)
    with launched_processes() as processes:
        device = _process_device(device, processes)
        input_problems: list[str] = []

        def input_failed(message: str) -> None:  # every process walks the same inputs: process 0 reports
            input_problems.append(message)
            if processes.is_main:
                report(message)

        for item in args.images:
            problem = input_problem(item)
            if problem is not None:
                input_failed(problem)
        images = [item for item in args.images if input_problem(item) is None]
        spec, split = _dataset_input(args)
        peeked: list[str] = []  # the walk stops at the first image: these are reported by the run's walk
        if spec is None and next(iter_images(images, args.recursive, report=peeked.append), None) is None:
            for message in peeked:
                input_failed(message)
            raise InputError("no images to process")
        model = load_model(args.model, args.delta_base, args.dataset, **conversion_overrides(args))
        processor = load_processor(args.model, model.config, args.task)
        stuff_classes = None
        if args.stuff_classes is not None:
            stuff_classes = parse_stuff_classes(args.stuff_classes, model.config.num_labels)
        items = iter_images(images, args.recursive, report=input_failed)
        if spec is not None:
            items = itertools.chain(items, iter_dataset_images(spec, split))
        inputs = {"images": [os.path.abspath(item) for item in args.images], "recursive": args.recursive,
                  "dataset": None if spec is None else spec.describe()}  # fmt: skip
        source = os.path.abspath(args.model) if Path(args.model).exists() else args.model
        try:
            result = run_predictions(
                model, processor, items, args.out, args.task, batch_size=args.batch_size, device=device,
                dtype=getattr(torch, args.dtype), threshold=args.threshold, mask_threshold=args.mask_threshold,
                overlap_mask_area_threshold=args.overlap_threshold, stuff_classes=stuff_classes,
                overwrite=args.overwrite, model_source=source, inputs=inputs, processes=processes, report=report,
            )  # fmt: skip
        except OutputConflictError as error:
            raise InputError(str(error)) from None
    failed = result.failed + len(input_problems)
    if processes.is_main:
        done = f", {result.skipped} already done" if result.skipped else ""
        print(f"segmented {result.segmented} image(s){done}: {result.predictions} lists {result.images}; overlays in "
              f"{Path(args.out) / 'overlays'}/")  # fmt: skip
        if failed:
            print(f"eomt predict: {failed} input(s) could not be used (see the errors above)", file=sys.stderr)
    return SOME_INPUTS_FAILED_STATUS if failed else 0
