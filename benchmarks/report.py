"""The benchmark's output: a Markdown table of the results and a JSON report with the machine and the options."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the tables need no torch (benchmarks/gpu_check.py writes them from JSON)
    import torch

    from benchmarks.measure import Stats
    from benchmarks.registry import Result

# unit: (scale, suffix) of the printed values
UNITS = {
    "s": (1e3, " ms"), "bytes": (2**-20, " MiB"), "FLOP/s": (1e-9, " GFLOP/s"), "FPS": (1.0, " FPS"),
    "images/s": (1.0, " images/s"),
}  # fmt: skip


def format_value(stats: Stats | None, unit: str) -> str:
    """`median [q1, q3]` in the unit's display scale (ms, MiB, GFLOP/s, FPS; ratios as they are)."""
    if stats is None:
        return "-"
    scale, suffix = UNITS.get(unit, (1.0, ""))
    digits = 0 if unit in UNITS and stats.median * scale >= 100 else 2
    value = lambda x: f"{x * scale:.{digits}f}"  # noqa: E731
    return f"{value(stats.median)}{suffix} [{value(stats.q1)}, {value(stats.q3)}]"


def markdown_table(results: Sequence[Result]) -> str:
    lines = [
        "| section | case | ours | transformers | ours / transformers | notes |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        ratio = format_value(result.ratio, "ratio")
        lines.append(
            f"| {result.section} | {result.case} | {format_value(result.ours, result.unit)} | "
            f"{format_value(result.reference, result.unit)} | {ratio} | {result.notes} |"
        )
    return "\n".join(lines)


def machine_description(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import torch

    description = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            description["cpu"] = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def write_json_report(
    path: Path, args: argparse.Namespace, machine: dict[str, Any], seconds: float, results: Sequence[Result]
) -> None:
    """`{"machine", "arguments", "seconds", "results"}` as JSON at `path`."""
    arguments = {key: str(value) for key, value in vars(args).items() if not callable(value)}
    report = {"machine": machine, "arguments": arguments, "seconds": seconds, "results": [r.to_dict() for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
