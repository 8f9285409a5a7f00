"""Run the benchmark: check the options, run the selected sections, print the Markdown table and write the JSON.

`eomt benchmark` (`training.commands.benchmark`) is the command line; `eomt benchmark --help` lists the sections.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from benchmarks.context import BenchmarkContext
from benchmarks.registry import Result, Section, select_sections
from benchmarks.report import machine_description, markdown_table, write_json_report

POSITIVE_OPTIONS = (
    "repeats", "threads", "image_size", "queries", "train_image_size", "train_batch_size", "train_queries",
    "memory_repeats", "matmul_size", "profile_rows", "gpu_iterations",
)  # fmt: skip


def check_arguments(args: argparse.Namespace) -> list[Section]:
    """The sections to run; a `ValueError` naming the option when the options do not fit together."""
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu measures CPU time; use the wall clock with --device cuda")
    for name in POSITIVE_OPTIONS:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be at least 0, got {args.warmup}")
    if not 0.0 <= args.train_mask_prob <= 1.0:
        raise ValueError(f"--train-mask-prob must be a probability in [0, 1], got {args.train_mask_prob}")
    for name in ("image_size", "train_image_size"):
        if getattr(args, name) % 16:
            raise ValueError(
                f"--{name.replace('_', '-')} must be a multiple of the patch size 16, got {getattr(args, name)}"
            )
    if args.out is not None and args.out.is_dir():  # checked before the first section, not after it
        raise ValueError(f"--out is the JSON report's file, got the directory {args.out}")
    return select_sections(args.sections, device, rehearse=getattr(args, "rehearse", False))


def run_benchmark(args: argparse.Namespace, config_overrides: dict[str, Any] | None = None) -> list[Result]:
    """Run the selected sections, print the Markdown table and write the JSON report when `args.out` is set (after
    every row, so that a run stopped part-way keeps what it measured). `config_overrides` change the model
    configuration of every section, after `--model-config` (tests use tiny models)."""
    sections = check_arguments(args)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    overrides = {**(getattr(args, "model_config", None) or {}), **(config_overrides or {})}
    context = BenchmarkContext(args, device, overrides)
    machine = machine_description(args, device)
    results: list[Result] = []
    started = time.perf_counter()
    for section in sections:
        print(f"== {section.key}: {section.title}", file=sys.stderr, flush=True)
        for result in section.run(context):  # a list, or a generator that yields rows as they are measured
            results.append(result)
            if args.out is not None:
                write_json_report(args.out, args, machine, time.perf_counter() - started, results)
    clock = "process CPU time / threads" if args.clock == "cpu" else "wall clock"
    print(f"\n{machine['cpu']}, {args.threads} threads, torch {machine['torch']}, {clock}, {machine['date']}\n")
    print(markdown_table(results))
    if args.out is not None:
        print(f"\nwrote {args.out}")
    return results
