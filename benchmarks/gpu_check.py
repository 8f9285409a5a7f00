"""The Python side of `benchmarks/gpu_check.sh`: the environment check it starts with and the report it rewrites after
every step.

    python -m benchmarks.gpu_check env --device cuda --work DIR
    python -m benchmarks.gpu_check report --work DIR --out DIR --budget SECONDS

`env` prints the versions, the GPU and which optional packages are missing, imports every module the script's steps
use (a missing one fails the step), and writes `DIR/env.json`. `report` reads `DIR/steps.tsv` (one line per step the
script ran: name, status, seconds, limit) and the steps' `eomt benchmark` reports `DIR/<step>.json`, and writes
`summary.md` (steps, goals, results as Markdown) and `results.json` (everything) to the output folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Batch-1 FPS goals of the static path on one H200 (640x640, 200 queries; issue 14), and the largest allowed
# difference of its logits to float32, relative to the largest float32 logit.
FPS_GOALS = {"S": 500, "B": 400, "L": 190}
LOGIT_TOLERANCE = 1e-2

OPTIONAL_PACKAGES = ("datasets", "evaluate", "pycocotools")
# What the steps import: the models, the benchmark with its sections, the loss of the training step, the commands.
STEP_MODULES = ("modeling_eomt", "image_processing", "benchmarks.runner", "training.loss", "training.commands")


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def describe_environment(device: str) -> dict[str, Any]:
    """Versions, the GPU and the optional packages present; raises if a module the steps use does not import."""
    import torch

    environment: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "missing_optional_packages": [name for name in OPTIONAL_PACKAGES if not importable(name)],
    }
    for name in ("transformers", "accelerate", "numpy", "scipy", "PIL", "safetensors", "onnx", "onnxruntime"):
        try:
            environment[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            environment[name] = None
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        memory, capability = properties.total_memory / 2**30, f"{properties.major}.{properties.minor}"
        environment["gpu"] = f"{properties.name}, {memory:.0f} GiB, compute capability {capability}"
        environment["cudnn"] = torch.backends.cudnn.version()
    for module in STEP_MODULES:
        importlib.import_module(module)
    from benchmarks.registry import UNAVAILABLE, load_sections

    environment["sections"] = list(load_sections())
    environment["unavailable_sections"] = dict(UNAVAILABLE)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device cuda but CUDA is not available (torch {torch.__version__})")
    return environment


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def read_steps(work: Path) -> list[dict[str, Any]]:
    """The steps run so far, from `steps.tsv`, each with the rows of its benchmark report (if any)."""
    steps = []
    path = work / "steps.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, seconds, limit = line.split("\t")[:4]
        step = {"step": name, "status": status, "seconds": int(seconds), "limit": int(limit)}
        report = work / f"{name}.json"
        if report.exists():
            step["benchmark"] = json.loads(report.read_text())
        steps.append(step)
    return steps


def goal_rows(results: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of the batch-1 goals: each static-path gpu-fps row against its size's FPS and logit goals."""
    rows = []
    for result in results:
        if result["section"] != "gpu-fps" or not result["case"].endswith("static path"):
            continue
        size = result["case"].split("/")[0].removeprefix("ViT-")
        fps, difference = result["fps"], result["relative_logit_difference"]
        goal = FPS_GOALS.get(size)
        met = goal is not None and fps >= goal and difference <= LOGIT_TOLERANCE
        rows.append(
            f"| ViT-{size} | {fps:.0f} | {goal} | {difference:.1e} | {LOGIT_TOLERANCE:g} | {'yes' if met else 'no'} |"
        )
    return rows


def write_report(work: Path, out: Path, budget: int) -> None:
    """`summary.md` and `results.json` in `out` from the steps recorded in `work` so far."""
    from benchmarks.report import markdown_table

    steps = read_steps(work)
    environment = json.loads((work / "env.json").read_text()) if (work / "env.json").exists() else {}
    results = [row for step in steps for row in step.get("benchmark", {}).get("results", [])]
    out.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment, "budget_seconds": budget, "steps": steps, "results": results}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")

    lines = ["# gpu_check", ""]
    if environment:
        keys = ("gpu", "torch", "cuda", "transformers", "python")
        described = ", ".join(f"{key} {environment.get(key)}" for key in keys)
        lines += [f"{described}; device {environment.get('device')}", ""]
        if environment.get("missing_optional_packages"):
            lines += [f"Not installed (not needed): {', '.join(environment['missing_optional_packages'])}", ""]
    total = sum(step["seconds"] for step in steps)
    lines += [f"Steps ({total} s of a {budget} s budget):", "", "| step | status | seconds | limit |"]
    lines += ["|---|---|---|---|"]
    lines += [f"| {step['step']} | {step['status']} | {step['seconds']} | {step['limit']} |" for step in steps]
    goals = goal_rows(results)
    if goals and environment.get("device") == "cuda":
        lines += ["", "Batch-1 goals of the static path (logits: largest |difference to float32| / largest |float32 "
                  "logit|, class and mask logits):", "", "| model | FPS | goal | logits vs float32 | tolerance | met |",
                  "|---|---|---|---|---|---|", *goals]  # fmt: skip
    elif environment.get("device") == "cpu":
        lines += ["", "A rehearsal on the CPU: the numbers say that every step runs, not how fast a GPU is."]
    if results:

        def stats(row: dict[str, Any], key: str) -> SimpleNamespace | None:
            return SimpleNamespace(**row[key]) if row.get(key) else None

        table = [SimpleNamespace(**{**row, **{key: stats(row, key) for key in ("ours", "reference", "ratio")}})
                 for row in results]  # fmt: skip
        lines += ["", "Results (median [quartiles]; ratio: ours / transformers, of times):", "", markdown_table(table)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env", help="versions, GPU, imports; writes WORK/env.json")
    env.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    env.add_argument("--work", type=Path, required=True)
    report = commands.add_parser("report", help="write summary.md and results.json from the steps so far")
    report.add_argument("--work", type=Path, required=True)
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--budget", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "env":
        environment = describe_environment(args.device)
        print(json.dumps(environment, indent=2))
        (args.work / "env.json").write_text(json.dumps(environment, indent=2) + "\n")
    else:
        write_report(args.work, args.out, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
