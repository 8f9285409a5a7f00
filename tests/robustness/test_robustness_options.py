"""Numeric options out of range, for every command: refused by argparse (exit status 2) before anything is read or
written, the option and what it expects named."""

from __future__ import annotations

import pytest

from tests.robustness.cases import Case, as_params, check_case
from tests.training.commands.helpers import TINY


def train(*options):
    """`eomt train` on the session's COCO set with `options` appended."""
    return lambda c: ["--data", c.coco, "--out", c.dir / "out", *TINY, *options]


def bad_option(entry, build, option, value, expected, **kwargs):
    """A case whose `option VALUE` is refused with argparse's `argument OPTION: expected ...`."""
    return Case(entry, f"{option} {value}", build(option, value),
                expect=[f"argument {option}: expected {expected}, got '{value}'"], absent=["out"], **kwargs)  # fmt: skip


def evaluate(*options):
    return lambda c: [c.model, "--data", c.coco, "--output", c.dir / "out" / "metrics.json", *options]


TRAIN = [
    ("--steps", "-5", "an integer >= 1"),  # was ignored: 12 epochs ran
    ("--steps", "0", "an integer >= 1"),  # ran one step
    ("--steps", "2.5", "an integer >= 1"),
    ("--grad-accum", "0", "an integer >= 1"),  # ZeroDivisionError
    ("--batch-size", "0", "an integer >= 1"),
    ("--eval-batch-size", "-1", "an integer >= 1"),
    ("--lr", "-1", "a number > 0.0"),
    ("--lr", "nan", "a number > 0.0"),
    ("--epochs", "0", "a number > 0.0"),
    ("--weight-decay", "-0.1", "a number >= 0.0"),
    ("--max-grad-norm", "-1", "a number >= 0.0"),
    ("--layer-decay", "0", "a number > 0.0"),
    ("--workers", "-1", "an integer >= 0"),
    ("--save-steps", "0", "an integer >= 1"),
    ("--logging-steps", "0", "an integer >= 1"),
    ("--eval-steps", "0", "an integer >= 1"),
    ("--eval-threshold", "1.5", "a number in [0.0, 1.0]"),
    ("--image-size", "0", "an integer >= 1"),
    ("--num-queries", "0", "an integer >= 1"),
    ("--head-warmup-steps", "-3", "an integer >= 0"),
    ("--max-nonfinite-steps", "0", "an integer >= 1"),
    ("--seed", "-1", "an integer >= 0"),
]
EVALUATE = [
    ("--threshold", "2", "a number in [0.0, 1.0]"),  # was accepted until post-processing refused it
    ("--threshold", "-0.1", "a number in [0.0, 1.0]"),
    ("--batch-size", "0", "an integer >= 1"),
    ("--workers", "-1", "an integer >= 0"),
]

CASES = [
    *(bad_option("train", lambda option, value: train(option, value), *row) for row in TRAIN),
    *(bad_option("evaluate", lambda option, value: evaluate(option, value), *row) for row in EVALUATE),
    bad_option("convert", lambda option, value: lambda c: [c.original, c.dir / "out", option, value], "--image-size", "0",
               "an integer >= 1"),
    bad_option("convert", lambda option, value: lambda c: [c.original, c.dir / "out", option, value], "--num-heads", "-2",
               "an integer >= 1"),
    bad_option("demo", lambda option, value: lambda c: ["--quick", "--out", c.dir / "out", option, value], "--steps", "0",
               "an integer >= 1"),
    bad_option("quickstart", lambda option, value: lambda c: ["--out", c.dir / "out", option, value], "--image-size",
               "-16", "an integer >= 1"),
    Case("benchmark", "--train-mask-prob 2", lambda c: ["--sections", "training", "--train-mask-prob", "2"],
         expect=["--train-mask-prob must be a probability in [0, 1], got 2.0"]),
    Case("train", "--skip-validation with --full-validation", train("--skip-validation", "--full-validation"),
         expect=["argument --full-validation: not allowed with argument --skip-validation"], absent=["out"]),
]  # fmt: skip


@pytest.mark.parametrize("case", as_params(CASES))
def test_bad_option(case, workspace, tmp_path, capsys, caplog):
    check_case(case, workspace, tmp_path, capsys, caplog)
