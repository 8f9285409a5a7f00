"""What `eomt train` checks about its output folder before it starts: a model it would replace, and, to resume, that
the last checkpoint is complete and readable and that the schedule options are the ones the run started with.

A run writes `train_settings.json` (its `TrainSettings` and number of processes) when it starts; `--resume` compares
the options that shape the optimisation (`SCHEDULE_FIELDS`) with it, since resuming with another `--steps`, for one,
would move the lr and mask-annealing schedules under the restored state (annealing could switch back on).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from modeling_eomt.checkpoints.io import check_safetensors_files, write_text_atomically

from .settings import TrainSettings

SETTINGS_FILE = "train_settings.json"
# The settings that shape the optimisation trajectory; a resumed run must keep them.
SCHEDULE_FIELDS = (
    "max_steps", "epochs", "learning_rate", "layer_decay", "weight_decay", "max_grad_norm", "batch_size",
    "gradient_accumulation_steps", "head_warmup_steps", "backbone_warmup_steps", "poly_power", "annealing_power",
    "annealing_start_steps", "annealing_end_steps", "seed", "size", "backbone", "checkpoint", "model_config",
    "image_size", "num_queries", "num_blocks", "processes",
)  # fmt: skip
_OPTION_NAMES = {"max_steps": "--steps", "learning_rate": "--lr", "gradient_accumulation_steps": "--grad-accum",
                 "size": "--model", "processes": "processes"}  # fmt: skip
# What `Trainer` writes into a checkpoint besides the weights (`rng_state_N.pth` per process in multi-process runs).
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# FSDP and DeepSpeed save the weights and optimizer state sharded, in their own layouts: only the rest is checked.
SHARDED_STATE = ("pytorch_model_fsdp_0", "optimizer_0", "global_step*")


def saved_model_files(directory: str | os.PathLike) -> list[str]:
    """The files of a saved model in `directory` (its `config.json` and weights), if any."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(path.name for path in directory.iterdir() if path.name == "config.json" or path.name in WEIGHT_FILES)


def run_settings(settings: TrainSettings) -> dict[str, Any]:
    """What `train_settings.json` records: the settings and the number of processes (the global batch)."""
    return {**dataclasses.asdict(settings), "processes": int(os.environ.get("WORLD_SIZE", "1"))}


def write_run_settings(settings: TrainSettings, output_dir: str | os.PathLike) -> None:
    write_text_atomically(Path(output_dir) / SETTINGS_FILE, json.dumps(run_settings(settings), indent=2) + "\n")


def _checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders of `output_dir`, by step."""
    found = [(int(m.group(1)), path) for path in output_dir.glob("checkpoint-*")
             if path.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", path.name))]  # fmt: skip
    return [path for _, path in sorted(found)]


def _unreadable(path: Path) -> str | None:
    """What is wrong with one file of a checkpoint, or None."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".pt", ".pth", ".bin"):  # torch.save's zip format: truncation loses the directory
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"{path}: corrupt (member {bad} fails its checksum)"
        elif path.suffix == ".safetensors":
            check_safetensors_files(path.parent)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        return f"{path}: not readable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    return None


def check_resumable(checkpoint: str | os.PathLike) -> None:
    """A `ValueError` naming what a checkpoint lacks (optimizer, scheduler, trainer state, weights, random-number
    state) or which of its files is unreadable (e.g. truncated by an interrupted save), and the checkpoint before it."""
    checkpoint = Path(checkpoint)
    sharded = any(any(checkpoint.glob(pattern)) for pattern in SHARDED_STATE)
    required = ("trainer_state.json",) if sharded else CHECKPOINT_FILES
    missing = [name for name in required if not (checkpoint / name).is_file()]
    if not sharded and not any((checkpoint / name).is_file() for name in WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    rng_states = sorted(checkpoint.glob("rng_state*.pth"))
    if not rng_states:
        missing.append("rng_state.pth")
    files = [checkpoint / name for name in (*CHECKPOINT_FILES, *WEIGHT_FILES) if (checkpoint / name).is_file()]
    problems = [problem for path in files + rng_states + sorted(checkpoint.glob("model-*.safetensors"))
                if (problem := _unreadable(path))]  # fmt: skip
    if missing:
        problems.insert(0, f"{checkpoint} is incomplete: no {', '.join(missing)}")
    if problems:
        earlier = [path for path in _checkpoints(checkpoint.parent) if path != checkpoint]
        hint = f"remove it to resume from {earlier[-1].name}" if earlier else "no earlier checkpoint to resume from"
        raise ValueError(f"--resume: {'; '.join(problems)} (an interrupted save?): {hint}")


def check_same_schedule(settings: TrainSettings, output_dir: str | os.PathLike, checkpoint: str | os.PathLike) -> None:
    """A `ValueError` listing the schedule options (`SCHEDULE_FIELDS`) that differ from those the run in `output_dir`
    started with; without its `train_settings.json`, the number of steps is compared with the checkpoint's."""
    output_dir, current = Path(output_dir), run_settings(settings)
    recorded_path = output_dir / SETTINGS_FILE
    if recorded_path.is_file():
        try:
            recorded = json.loads(recorded_path.read_text())
        except ValueError as error:
            raise ValueError(f"--resume: {recorded_path}: not valid JSON ({error})") from None
        source = str(recorded_path)
    else:  # a run started before the file existed: the checkpoint knows the number of steps
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        recorded = {"max_steps": state.get("max_steps")} if settings.max_steps is not None else {}
        source = str(Path(checkpoint) / "trainer_state.json")
    names = [name for name in SCHEDULE_FIELDS
             if name in recorded and _normalise(recorded[name]) != _normalise(current[name])]  # fmt: skip
    if current.get("max_steps") is not None and recorded.get("max_steps") is not None:
        names = [name for name in names if name != "epochs"]  # the steps decide
    if names:
        differences = ", ".join(
            f"{_OPTION_NAMES.get(name, '--' + name.replace('_', '-'))} {_show(current[name])} (the run: "
            f"{_show(recorded[name])})" for name in names
        )  # fmt: skip
        raise ValueError(f"--resume: the schedule options differ from the run being resumed ({source}): {differences}; "
                         "resume with the run's options, or start a new run in another --out")  # fmt: skip


def _normalise(value: Any) -> Any:
    """JSON round trip, so that tuples and lists, and int and float keys, compare equal."""
    return json.loads(json.dumps(value))


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items()) or "none"
    return str(value)
