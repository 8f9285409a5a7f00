"""`eomt train` under a multi-process launch: the processes train one model together, or stop with one line; never
copies that train alone and write to the same folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.commands.helpers import FAST, TINY, assert_error
from tests.training.helpers import free_port
from training import launch

ROOT = Path(__file__).resolve().parents[3]


def test_a_cpu_machine_launch_without_cpu_trains_together(panoptic_root, tmp_path):
    out = tmp_path / "run"
    fast = [option for option in FAST if option != "--cpu"]  # what a user forgets: --cpu on a machine without GPUs
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), "-m", "training.commands", "train", "--data", str(panoptic_root),
        "--out", str(out), *TINY, *fast, "--steps", "4", "--no-eval",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in result.stderr  # transformers' warning of lone ranks
    assert result.stdout.count(f"wrote {out}/") == 1  # the main process reports
    history = json.loads((out / "log_history.json").read_text())
    # 6 training images, batch 2 per process: 2 steps per epoch with 2 processes (3 alone); 4 steps are 2 epochs
    assert history[-1]["step"] == 4 and history[-1]["epoch"] == pytest.approx(2.0)


def test_a_process_outside_the_process_group_stops_before_training(panoptic_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch, "launched_processes", lambda: 2)  # launched as 2 processes, but alone in its group
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "run"
    error = assert_error(capsys, "train", "--data", panoptic_root, "--out", out, *TINY, *FAST, "--steps", 2,
                         expected="was started as rank 1 of 2")  # fmt: skip
    assert "but runs 1 process(es) together" in error and f"write to {out}" in error
    assert not out.exists() or not any(out.iterdir())  # nothing trained, nothing written
