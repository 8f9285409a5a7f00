"""Command-line options of `benchmarks.benchmark`, importable without torch (for `eomt benchmark --help`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.learning import add_learning_arguments


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options, shared by `python -m benchmarks.benchmark` and `eomt benchmark`."""
    parser.add_argument(
        "--sections",
        default="all",
        help="comma-separated sections to run, e.g. forward,training "
        "(default: all that apply to the device; an unknown name lists the available ones)",
    )
    parser.add_argument("--size", default="S", choices=["S", "B", "L"], help="ViT size (default S)")
    parser.add_argument(
        "--image-size", type=int, default=640, help="square input side of the forward sections (default 640)"
    )
    parser.add_argument("--queries", type=int, default=200, help="queries of the forward sections (default 200)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per candidate (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: elapsed time (default); cpu: process CPU time / threads, steadier on a shared machine "
        "(run with OMP_WAIT_POLICY=PASSIVE so that waiting threads do not spin)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile in the fast-inference section (compiles for a minute or more on CPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--e2e-batch-sizes", default="1,8", help="batch sizes of the end-to-end section (default 1,8)")
    parser.add_argument(
        "--train-image-size", type=int, default=320, help="input side of the training step (default 320)"
    )
    parser.add_argument("--train-batch-size", type=int, default=2, help="batch of the training step (default 2)")
    parser.add_argument("--train-queries", type=int, default=100, help="queries of the training step (default 100)")
    parser.add_argument(
        "--train-mask-prob",
        type=float,
        default=1.0,
        help="attn_mask_probs during the training step (default 1: the start of mask annealing)",
    )
    parser.add_argument(
        "--memory-repeats", type=int, default=3, help="measured steps per peak-memory probe (default 3)"
    )
    parser.add_argument(
        "--matmul-size", type=int, default=2048, help="side of the square matmul that measures the ceiling"
    )
    parser.add_argument("--gpu-sizes", default="S,B,L", help="ViT sizes of the CUDA FPS section (default S,B,L)")
    parser.add_argument(
        "--profile-rows", type=int, default=12, help="operators listed by the profile section (default 12)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: the fresh memory process
    return add_learning_arguments(parser)
