"""`eomt benchmark`: bad options are one line and exit status 2; `--help` lists the sections."""

import pytest
import torch

from benchmarks.registry import load_sections
from training.commands import main as eomt


def test_cli_rejects_bad_options_with_one_line(capsys, tmp_path):
    assert eomt(["benchmark", "--sections", "forward,nope"]) == 2
    assert "unknown section 'nope'" in capsys.readouterr().err
    assert eomt(["benchmark", "--train-image-size", "100"]) == 2
    assert "--train-image-size must be a multiple of the patch size 16, got 100" in capsys.readouterr().err
    assert eomt(["benchmark", "--repeats", "0"]) == 2
    assert capsys.readouterr().err == "eomt benchmark: error: --repeats must be at least 1, got 0\n"
    assert eomt(["benchmark", "--sections", "forward", "--out", str(tmp_path)]) == 2  # before any section runs
    error = f"eomt benchmark: error: --out is the JSON report's file, got the directory {tmp_path}\n"
    assert capsys.readouterr().err == error


def test_help_lists_every_section(capsys):
    with pytest.raises(SystemExit) as exit_info:
        eomt(["benchmark", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "--sections SECTIONS" in printed
    for key, section in load_sections().items():
        assert f"  {key} " in printed and section.title in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys):
    assert eomt(["benchmark", "--device", "cuda", "--sections", "gpu-fps"]) == 2
    assert capsys.readouterr().err.startswith("eomt benchmark: error: --device cuda: CUDA is not available")
