"""`eomt predict` under `accelerate launch` with two CPU processes (gloo): each image segmented by exactly one process,
and the merged folder byte for byte the one a single process writes; a run killed (SIGKILL, mid-record) and resumed
with two processes skips the images done and ends with the same files."""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.helpers import free_port, tiny_inference_model
from training.commands import main

ROOT = Path(__file__).resolve().parents[3]
OPTIONS = ["--threshold", "0.3", "--overlap-threshold", "0.3", "--recursive"]
# Run `eomt predict` in this process, killing it with SIGKILL halfway through writing record number KILL_AT + 1.
KILLED_RUN = """
import os, signal, sys
from training import prediction_store

written = 0
original = prediction_store.RecordWriter.write

def write(self, name, source, fields):
    global written
    if written == int(os.environ["KILL_AT"]):
        line = prediction_store.record_line(name, source, fields)
        self.file.write(line[: len(line) // 2])
        self.file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    written += 1
    original(self, name, source, fields)

prediction_store.RecordWriter.write = write
from training.commands import main
sys.exit(main(sys.argv[1:]))
"""


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def launch_two(*argv) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", str(free_port()), "-m", "training.commands", "predict", *map(str, argv)]  # fmt: skip
    return subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny model and 14 images: 10 in `images/`, 3 in `images/sub/`, and `003.jpg` beside `003.png`."""
    root = tmp_path_factory.mktemp("sharded")
    torch.manual_seed(0)
    tiny_inference_model().save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    (root / "images" / "sub").mkdir(parents=True)
    for index in range(10):
        Image.fromarray(rng.integers(0, 256, (40 + index, 56, 3), dtype=np.uint8)).save(root / "images" / f"{index:03d}.png")
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "images" / "sub" / f"{index:03d}.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "images" / "003.jpg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1): the same kernels, the same floats
    try:
        assert main(["predict", str(root / "model"), str(root / "images"), "--out", str(root / "single"), *OPTIONS]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def result_files(out: Path) -> dict[str, bytes]:
    """Every file of the run except the per-process records."""
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and "records" not in path.parts}  # fmt: skip


def record_names(out: Path) -> dict[int, list[str]]:
    return {int(path.stem.removeprefix("rank")): [json.loads(line)["name"] for line in path.read_text().splitlines()]
            for path in sorted((out / "records").glob("rank*.jsonl"))}  # fmt: skip


def test_two_processes_write_what_one_process_writes(workspace):
    result = launch_two(workspace / "model", workspace / "images", "--out", workspace / "two", *OPTIONS)
    assert result.returncode == 0, result.stderr[-3000:]
    single, two = result_files(workspace / "single"), result_files(workspace / "two")
    assert len(single) == 2 + 2 * 14  # predictions.json, run.json, a panoptic PNG and an overlay per image
    assert single.keys() == two.keys()
    assert [name for name in single if single[name] != two[name]] == []  # byte for byte
    names = record_names(workspace / "two")
    assert sorted(names) == [0, 1] and all(names.values())  # both processes worked
    done = names[0] + names[1]
    assert len(done) == len(set(done)) == 14  # each image segmented once
    listed = [entry["file_name"] for entry in json.loads(single["predictions.json"])["annotations"]]
    assert sorted(f"{name}.png" for name in done) == listed  # sorted by name
    assert {"003.png", "003~2.png", "sub/000.png"} <= set(listed)
    assert result.stdout.count("segmented 14 image(s)") == 1  # one summary, from process 0


def test_killed_run_resumed_by_two_processes_ends_with_the_same_files(workspace):
    out = workspace / "killed"
    command = [sys.executable, "-c", KILLED_RUN, "predict", str(workspace / "model"), str(workspace / "images"),
               "--out", str(out), *OPTIONS]  # fmt: skip
    killed = subprocess.run(command, env={**environment(), "KILL_AT": "5"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    records = (out / "records" / "rank0.jsonl").read_text()
    assert records.count("\n") == 5 and not records.endswith("\n")  # 5 records and half of the sixth
    assert not (out / "predictions.json").exists()

    resumed = launch_two(workspace / "model", workspace / "images", "--out", out, *OPTIONS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "segmented 9 image(s), 5 already done" in resumed.stdout
    names = record_names(out)
    done = names[0] + names[1]
    assert len(done) == len(set(done)) == 14 and len(names[1]) > 0  # the half record was cut, not duplicated
    single, again = result_files(workspace / "single"), result_files(out)
    assert single.keys() == again.keys() and [name for name in single if single[name] != again[name]] == []
    assert filecmp.cmp(workspace / "single" / "predictions.json", out / "predictions.json", shallow=False)
