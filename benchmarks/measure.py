"""Measuring tools of the benchmark: interleaved timing, robust statistics, FLOP counting, and the peak memory of a
function run in a fresh process."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from tqdm.auto import tqdm


# ----------------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """Median and spread of repeated measurements (seconds, bytes or ratios)."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Stats":
        values = sorted(samples)
        if len(values) == 1:
            q1 = q3 = values[0]
        else:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), q1, q3, values[0], values[-1], len(values))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> Stats:
    """Statistics of the per-repetition ratios `numerator[i] / denominator[i]` of two interleaved series: background
    load that slows down one repetition slows down both of its members, so the ratio is steadier than either series."""
    return Stats.of([a / b for a, b in zip(numerator, denominator)])


# ----------------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_clock(threads: int) -> Callable[[], float]:
    """Process CPU seconds divided by `threads`: the wall time an unloaded machine would show when all threads are
    busy; steadier than the wall clock while other processes share the cores."""
    return lambda: time.process_time() / threads


def time_interleaved(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device = torch.device("cpu"),
    description: str = "",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each candidate by `clock`, `repeats` times, the candidates interleaved within every repetition
    (forward order on even repetitions, reverse order on odd ones) after `warmup` untimed rounds."""
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rounds = tqdm(range(warmup + repeats), desc=description or "timing", leave=False, file=sys.stderr)
    for round_index in rounds:
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            synchronize(device)
            start = clock()
            candidates[name]()
            synchronize(device)
            if round_index >= warmup:
                samples[name].append(clock() - start)
    return samples


# ----------------------------------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------------------------------


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_attention_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# `FlopCounterMode` knows the CUDA attention kernels but not the CPU flash-attention kernel SDPA dispatches to.
_EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward_flops,
}


def count_flops(function: Callable[[], object]) -> int:
    """Floating-point operations (multiply and add counted separately) of the matmuls, convolutions and attention
    that `function` runs; elementwise work (norms, activations) is not counted."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        function()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------------------------------------------------
# Peak memory of a function, in a fresh process
# ----------------------------------------------------------------------------------------------------------------------

# Large blocks are mmap-ed and returned to the OS on free, so the resident set follows the live tensors instead of
# glibc's cache of freed blocks.
MEMORY_PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} field")


def peak_rss_delta(step: Callable[[], object], repeats: int) -> list[int]:
    """Bytes by which the resident set's high-water mark (VmHWM) rises above the resident set just before `step`,
    once per repetition. Call it in a process started for this purpose (see `MEMORY_PROBE_ENV`), after one untimed
    `step` so that lazily created state (optimizer moments, gradients) is part of the baseline, not of the peak."""
    libc = ctypes.CDLL("libc.so.6")
    deltas = []
    for _ in range(repeats):
        gc.collect()
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current resident set
        baseline = _status_kib("VmRSS")
        step()
        deltas.append((_status_kib("VmHWM") - baseline) * 1024)
    return deltas


def run_in_fresh_process(target: str, arguments: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """`function(**arguments)` for `target` = "package.module:function", run in a new Python process (with `env` added
    to the environment), and its return value, which must be JSON-serialisable."""
    module, function = target.split(":")
    code = (
        "import importlib, json, sys; "
        f"result = importlib.import_module({module!r}).{function}(**json.loads(sys.argv[1])); "
        "print(json.dumps(result))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-c", code, json.dumps(arguments)]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=root)
    if completed.returncode != 0:
        raise RuntimeError(f"{target}({arguments}) failed in a fresh process:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])
