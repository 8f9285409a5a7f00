"""The README's commands and examples, as written: the set-up commands come first, every `eomt` command line parses
with the real argument parsers (accelerate's too), and every Python block and every command on the demo's outputs runs
(after a quick `eomt demo`, whose output folder they use)."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from accelerate.commands.launch import launch_command_parser

from tests.training.helpers import single_thread  # noqa: F401 (a fixture)
from training.commands import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def eomt_arguments(line: str) -> list[str] | None:
    """The arguments an `eomt` command line passes to `training.commands` (None for other lines)."""
    words = shlex.split(line)
    for index, word in enumerate(words):
        if Path(word).name == "eomt":
            return words[index + 1 :]
        if word == "training.commands" and words[index - 1] == "-m":
            return words[index + 1 :]
    return None


def test_the_set_up_commands_come_first_and_ci_runs_the_test_command():
    assert README.index("```bash") < README.index("\n## ")  # before any section
    install_and_demo, tests = code_blocks("bash")[0].splitlines()
    assert install_and_demo.startswith("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 && ")
    assert eomt_arguments(install_and_demo.split("&&")[-1]) == ["demo"]  # the main job, on its built-in default
    assert tests == "bash tests/run.sh"
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == tests
    assert ".venv/bin/python -m pip install" in (ROOT / "tests" / "run.sh").read_text()  # it installs everything


def test_every_eomt_command_line_parses():
    lines = [line for block in code_blocks("bash") for line in block.splitlines() if eomt_arguments(line) is not None]
    commands = {eomt_arguments(line)[0] for line in lines}
    assert {"demo", "train", "evaluate", "predict", "convert", "export", "benchmark"} <= commands
    parser = build_parser()
    for line in lines:
        try:
            parser.parse_args(eomt_arguments(line))
            if line.startswith("accelerate launch"):
                launch_command_parser().parse_args(shlex.split(line)[2:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {line}")


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """A folder holding `outputs/demo` of a quick demo run, where the examples run."""
    folder = tmp_path_factory.mktemp("readme")
    with contextlib.chdir(folder), contextlib.redirect_stdout(io.StringIO()):
        assert main(["demo", "--quick", "--out", "outputs/demo"]) == 0
    return folder


# What makes the README's commands on the demo's outputs quick (the last value of an option wins).
QUICK_OPTIONS = {
    "train": ["--steps", "2", "--batch-size", "2", "--workers", "0", "--no-progress"],
    "evaluate": ["--workers", "0", "--no-progress"],
    "predict": [],
    "export": [],
}


def test_the_commands_on_the_demo_outputs_run(demo_folder, monkeypatch, single_thread):
    monkeypatch.chdir(demo_folder)
    lines = [line for block in code_blocks("bash") for line in block.splitlines()]
    commands = [eomt_arguments(line) for line in lines if "outputs/demo/" in line and eomt_arguments(line)]
    assert [arguments[0] for arguments in commands] == ["train", "evaluate", "predict", "export"]
    for arguments in commands:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(arguments + QUICK_OPTIONS[arguments[0]]) == 0, arguments
    assert Path("runs/demo_s/config.json").is_file() and Path("runs/demo_s/eval_metrics.json").is_file()
    images = list(Path("outputs/demo/data/val2017").iterdir())
    assert len(list(Path("outputs/predict/overlays").glob("*.png"))) == len(images)
    assert Path("outputs/demo.onnx").stat().st_size > 0


def test_every_python_example_runs(demo_folder, monkeypatch, single_thread):
    monkeypatch.chdir(demo_folder)
    # the remote-code example: transformers copies the folder's code here, not into the user's cache
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(demo_folder / "modules"))
    blocks = code_blocks("python")
    assert len(blocks) >= 4
    printed = io.StringIO()
    for number, block in enumerate(blocks, 1):
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"README.md python block {number}", "exec"), {"__name__": f"readme_{number}"})
    assert Path("segmentation.png").stat().st_size > 0  # the inference example's overlay
    assert "'eval_pq':" in printed.getvalue()  # the fine-tuning example's evaluation
    for model_dir in ("outputs/finetune/model", "outputs/demo/transformers"):
        assert (Path(model_dir) / "config.json").is_file(), model_dir
    assert (Path("outputs/finetune/model") / "preprocessor_config.json").is_file()
    assert "modeling_eomt" in printed.getvalue()  # the remote-code example's model class (the installed one here)
    assert (Path("outputs/plain_trainer/model") / "modeling_eomt.py").is_file()
