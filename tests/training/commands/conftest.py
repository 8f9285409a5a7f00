"""Fixtures of the command tests: a generated COCO panoptic set and one `eomt train` run on it."""

import contextlib
import io

import pytest
import torch

from tests.training.commands.helpers import FAST, TINY, run_cli
from training.data import write_synthetic_coco_panoptic


@pytest.fixture(scope="session")
def panoptic_root(tmp_path_factory):
    return write_synthetic_coco_panoptic(tmp_path_factory.mktemp("data"), num_train=6, num_val=3, size=32, seed=7)


@pytest.fixture(scope="session")
def trained_run(panoptic_root, tmp_path_factory):
    """The output folder of `eomt train` (4 steps, evaluated every 2) and what it printed."""
    out = tmp_path_factory.mktemp("train") / "run"
    printed = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: see `single_thread`
    torch.manual_seed(0)
    try:
        with contextlib.redirect_stdout(printed):
            assert run_cli("train", "--data", panoptic_root, "--out", out, *TINY, *FAST, "--steps", 4,
                           "--eval-steps", 2) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return out, printed.getvalue()
