"""Multi-process launches (`accelerate launch`, `torchrun`): every process runs the same `eomt train` / `eomt evaluate`,
and these make sure that the processes work on one model together, never on one copy each writing to the same folder.

- `launch_uses_cpu`: a multi-process launch on a machine without an accelerator trains on the CPU in every process,
  together (gloo), as with `--cpu`; transformers would otherwise leave each process alone.
- `check_process_group`: a process that was launched as one of several but whose `Trainer` runs alone stops with an
  error that says so, before it trains or writes anything.
- `end_process_group`: the process leaves its process group when its command is done, before the interpreter exits.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def launched_processes() -> int:
    """How many processes the launcher started (`WORLD_SIZE`; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launch_uses_cpu(use_cpu: bool) -> bool:
    """`use_cpu` (`--cpu`), or True for a multi-process launch on a machine without an accelerator."""
    if use_cpu or launched_processes() == 1:
        return use_cpu
    import torch

    return not torch.accelerator.is_available()


def check_process_group(args: Any) -> None:
    """A `ValueError` when this process was launched as one of several but its `TrainingArguments` `args` run a
    different number of processes (each process would train or evaluate on its own and write to `args.output_dir`)."""
    launched = launched_processes()
    if launched == 1 or args.world_size == launched:
        return
    rank = os.environ.get("RANK", "?")
    raise ValueError(
        f"this process was started as rank {rank} of {launched} (WORLD_SIZE={launched}, by accelerate launch or "
        f"torchrun) but runs {args.world_size} process(es) together ({args.parallel_mode}): every process would "
        f"train its own copy and write to {args.output_dir}. Launch at most one process per GPU (accelerate launch "
        "--multi_gpu --num_processes N), or pass --cpu to train together on the CPU"
    )


def end_process_group() -> None:
    """Leave the process group (joined by accelerate / transformers for a multi-process launch), if any. A gloo group
    left to the interpreter's exit can abort the process after its work is done ("terminate called without an active
    exception", SIGABRT), which fails the launch; PyTorch asks for `destroy_process_group` before exit."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group to leave
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
