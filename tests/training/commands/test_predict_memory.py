"""`eomt predict` over 2,000 generated images keeps its resident memory within 100 MiB of its level after the first
100 (issue 13): nothing per image is held (results go to the record file as they are made, the merge streams)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.helpers import tiny_inference_model

ROOT = Path(__file__).resolve().parents[3]
IMAGES, BASELINE_AFTER, ALLOWED_GROWTH_MIB = 2000, 100, 100


def resident_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), None)


def records_done(out: Path) -> int:
    try:
        return (out / "records" / "rank0.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident set size from /proc")
def test_resident_memory_stays_flat_over_2000_images(tmp_path):
    torch.manual_seed(0)
    tiny_inference_model().save_pretrained(tmp_path / "model")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(IMAGES):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(images / f"{index:06d}.png", compress_level=1)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "training.commands", "predict", str(tmp_path / "model"), str(images), "--out", str(out)]
    with open(tmp_path / "stderr.txt", "wb") as stderr:  # a file, not a pipe: the progress bar never blocks the run
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    baseline, peak, samples = None, 0.0, 0
    while process.poll() is None:
        rss = resident_mib(process.pid)
        if rss is not None:
            if baseline is None and records_done(out) >= BASELINE_AFTER:
                baseline = rss
            if baseline is not None:
                peak, samples = max(peak, rss), samples + 1
        time.sleep(0.02)
    assert process.returncode == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert records_done(out) == IMAGES
    assert baseline is not None and samples > 10  # sampled through the run, not only at its end
    growth = peak - baseline
    print(f"eomt predict, {IMAGES} images: {baseline:.0f} MiB after {BASELINE_AFTER}, peak {peak:.0f} MiB after that "
          f"(+{growth:.1f} MiB, {samples} samples)")
    assert growth <= ALLOWED_GROWTH_MIB
