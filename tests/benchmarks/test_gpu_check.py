"""benchmarks/gpu_check.sh rehearsed on the CPU (`--device cpu`: tiny models), as on a GPU machine with PyTorch but
without datasets, evaluate and pycocotools: every step runs and the outputs are what the script promises."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["env", "tests", "gpu-fps-static", "gpu-throughput", "forward", "training", "gpu-fps-compile-S"]

# Imported at the start of every Python process of the run (PYTHONPATH): the packages a bare PyTorch machine lacks
# cannot be imported.
BLOCK_OPTIONAL_PACKAGES = '''
import importlib.abc, sys

class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("datasets", "evaluate", "pycocotools"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
'''


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(BLOCK_OPTIONAL_PACKAGES)
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    env = {key: value for key, value in os.environ.items() if key not in ("OUT", "GPU_CHECK_OUT", "GPU_CHECK_BUDGET")}
    python_path = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=python_path)
    command = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    return result, out


def test_every_step_runs_and_reports(rehearsal):
    result, out = rehearsal
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert sorted(path.name for path in out.iterdir()) == ["gpu_check.log", "pytest.log", "results.json", "summary.md"]
    report = json.loads((out / "results.json").read_text())
    assert [(step["step"], step["status"]) for step in report["steps"]] == [(step, "ok") for step in STEPS]
    assert report["environment"]["missing_optional_packages"] == ["datasets", "evaluate", "pycocotools"]
    assert set(report["environment"]["unavailable_sections"]) == {"predict", "data_loading"}  # they need those
    print(f"rehearsal: {sum(step['seconds'] for step in report['steps'])} s of steps")

    summary = (out / "summary.md").read_text()
    assert all(f"| {step} | ok |" in summary for step in STEPS)
    assert "A rehearsal on the CPU" in summary
    assert "| gpu-fps | ViT-S/16, 32px, 5 queries, float16, static path |" in summary
    tests = (out / "pytest.log").read_text()  # the tests marked cuda, all skipped here
    assert re.search(r"^\d+ skipped", tests, re.MULTILINE) and not re.search(r"passed|failed|error", tests)
    assert "[gpu_check" in result.stdout  # progress on the console


def test_each_section_reports_its_rows(rehearsal):
    _, out = rehearsal
    rows = json.loads((out / "results.json").read_text())["results"]
    cases = [(row["section"], row["case"]) for row in rows]
    fps = [case for section, case in cases if section == "gpu-fps"]
    shape = "ViT-S/16, 32px, 5 queries, float16"
    assert fps == [f"{shape}, static path", f"{shape}, torch.compile"]
    throughput = [case.split(", ", 3)[-1] for section, case in cases if section == "gpu-throughput"]
    assert throughput == ["batch 2, float16, static path", "batch 2, float16, autocast",
                          "batch 3, float16, static path", "batch 3, float16, autocast"]  # fmt: skip
    assert sum(section == "forward" for section, _ in cases) == 3
    assert sum(section == "training" for section, _ in cases) >= 2  # steps (+ peak memory where /proc allows)
    for row in rows:
        if row["section"].startswith("gpu-"):
            assert 0 < row["relative_logit_difference"] < 1e-2  # float16 against float32, on the scale of the logits
            assert row["ours"]["median"] > 0 and row["reference"]["median"] > 0
