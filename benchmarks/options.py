"""The options of `eomt benchmark`, importable without torch (building the `eomt` parser imports them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.learning import add_learning_arguments


def choice_list(*allowed: str):
    """An argparse type: a comma-separated list of some of `allowed`."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(allowed)}, got {text!r}")
        return items

    return parse


def positive_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of positive integers."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values


def json_object(text: str) -> dict:
    """`--model-config`'s value: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of EoMTConfig fields, got {text!r}")
    return value


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (the sections read them from `context.args`)."""
    parser.add_argument(
        "--sections",
        default="all",
        help="comma-separated sections to run, e.g. forward,training (default: all that apply to the device, except "
        "those run only when named; listed below)",
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
    parser.add_argument(
        "--gpu-sizes",
        type=choice_list("S", "B", "L"),
        default="S,B,L",
        help="ViT sizes of the gpu-fps and gpu-throughput sections (default S,B,L)",
    )
    parser.add_argument(
        "--gpu-paths",
        type=choice_list("static", "compile"),
        default="static,compile",
        help="inference paths of the gpu-fps section: static (CUDA graph of the whole forward, compiled blocks; "
        "enable_fast_inference(static_shape=...)) and compile (torch.compile of the whole forward, against "
        "transformers' model compiled the same way) (default static,compile)",
    )
    parser.add_argument(
        "--gpu-dtype",
        default="float16",
        choices=["float16", "bfloat16"],
        help="autocast dtype of the gpu-fps and gpu-throughput sections (default float16: logits within 0.2%% of "
        "float32; bfloat16: about 1%%)",
    )
    parser.add_argument(
        "--gpu-batch-sizes",
        type=positive_ints,
        default="8,32",
        help="batch sizes of the gpu-throughput section (default 8,32)",
    )
    parser.add_argument(
        "--gpu-iterations",
        type=int,
        default=20,
        help="back-to-back batch-1 calls per timed repetition of the gpu-fps section (default 20)",
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the compiled paths (default inductor; aot_eager checks the tracing quickly)",
    )
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="allow the CUDA-only sections on the CPU, to check that they run (use tiny models: --model-config, "
        "--image-size; the numbers mean nothing)",
    )
    parser.add_argument(
        "--model-config",
        type=json_object,
        default=None,
        metavar="JSON",
        help="EoMTConfig fields that override every section's model, as a JSON object, e.g. "
        '\'{"num_hidden_layers": 2}\' for a quick run',
    )
    parser.add_argument(
        "--profile-rows", type=int, default=12, help="operators listed by the profile section (default 12)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    return add_learning_arguments(parser)
