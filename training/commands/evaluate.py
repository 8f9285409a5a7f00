"""`eomt evaluate`: PQ, mask AP or mIoU of an EoMT checkpoint on a data set folder (`training.run.evaluate`)."""

from __future__ import annotations

import argparse

from training.commands.arguments import (
    add_data_arguments,
    data_options,
    is_main_process,
    non_negative_int,
    positive_int,
    print_metrics,
    probability,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="evaluate an EoMT checkpoint on a data set folder (PQ, mask AP or "
                                 "mIoU)")  # fmt: skip
    parser.add_argument("model", help="EoMT checkpoint folder or Hub id")
    add_data_arguments(parser)
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch and process (default: 8)")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="data loading processes (default: 2)")
    parser.add_argument("--masked-attention", action="store_true", help="run with masked attention in every block")
    parser.add_argument("--threshold", type=probability, help="class-score threshold of panoptic/instance "
                        "post-processing (default: the authors' 0.8 / 0)")  # fmt: skip
    parser.add_argument("--output", help="metrics JSON (default: MODEL/eval_metrics.json for a local MODEL)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from training.run import evaluate

    data = data_options(args)
    metrics = evaluate(
        args.model, data["data"], split=args.split, format=data["format"], task=args.task, batch_size=args.batch_size,
        workers=args.workers, masked_attention=args.masked_attention, threshold=args.threshold, use_cpu=args.cpu,
        progress=not args.no_progress, output=args.output, hub_options=data["hub_options"],
    )  # fmt: skip
    if is_main_process():
        print_metrics(metrics)
    return 0
