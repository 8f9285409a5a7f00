"""`training.launch`: how many processes a launch started, whether they train together on the CPU, the check that
stops a process whose `Trainer` runs alone, and leaving the process group after a command (`eomt train` under real
launches: `tests/training/commands/test_train_launch.py`)."""

from types import SimpleNamespace

import pytest
import torch

from training import launch


def test_launch_checks(monkeypatch):
    args = SimpleNamespace(world_size=1, parallel_mode="ParallelMode.NOT_PARALLEL", output_dir="runs/x")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch.launched_processes() == 1
    launch.check_process_group(args)  # no launcher: one process is right
    assert launch.launch_uses_cpu(False) is False
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="rank .* of 2 .* every process would train its own copy and write to runs/x"):
        launch.check_process_group(args)
    launch.check_process_group(SimpleNamespace(world_size=2))  # together
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert launch.launch_uses_cpu(False) is True  # several processes, no accelerator: together on the CPU
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert launch.launch_uses_cpu(False) is False  # one GPU per process: accelerate's DDP


def test_the_eomt_command_leaves_the_process_group(tmp_path):
    # A gloo group left to the interpreter's exit aborted one rank of a 2-process run after its work (SIGABRT)
    import torch.distributed as dist

    from training.commands import main as eomt

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert eomt(["benchmark", "--repeats", "0"]) == 2  # also when the command fails
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    launch.end_process_group()  # no group: nothing to leave
    assert not dist.is_initialized()
