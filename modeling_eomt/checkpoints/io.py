"""Reading weight files and model directories (local or from the Hub) safely: safetensors, or legacy pickles with
`torch.load(weights_only=True)`; writing files atomically (a temporary file, then `os.replace`), so that an
interrupted save leaves the previous version intact."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SAFETENSORS_NAME, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PYTORCH_NAME, PYTORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# The keyword arguments of `from_pretrained` that choose what to download from the Hub, and how.
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


def hub_download_kwargs(kwargs: dict[str, Any], pop: bool = False) -> dict[str, Any]:
    """The Hub download arguments among `kwargs` (`HUB_KWARGS`), removed from `kwargs` when `pop`."""
    return {key: kwargs.pop(key) if pop else kwargs[key] for key in HUB_KWARGS if key in kwargs}


def load_weight_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of one weight file: safetensors, or a legacy pickle read with `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path}: could not be read as a weights-only PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Only tensors and plain containers are accepted."
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning checkpoints
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict), got {type(state).__name__}")
    return state


def load_state_dict_from_directory(directory: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of a `save_pretrained` directory: (sharded) safetensors first, else (sharded) pytorch_model.bin."""
    directory = Path(directory)
    for index_name in (SAFETENSORS_INDEX, PYTORCH_INDEX):
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            state: dict[str, Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_weight_file(directory / shard))
            return state
    for name in (SAFETENSORS_NAME, PYTORCH_NAME):
        if (directory / name).is_file():
            return load_weight_file(directory / name)
    raise FileNotFoundError(f"{directory}: no {SAFETENSORS_NAME}, {PYTORCH_NAME} or sharded index found")


def resolve_model_files(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """A local model directory as is, or a Hub repo id downloaded to the local cache: `config.json` and the
    safetensors weights, or the `pytorch_model*.bin` weights when the repo has no safetensors."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path}: expected a model directory (config.json + weights), got a file")
    from huggingface_hub import snapshot_download

    try:
        directory = Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors"], **hub_kwargs))
        if not any(directory.glob("*.safetensors")):
            directory = Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.bin"], **hub_kwargs))
    except Exception as error:
        message = f"{name_or_path}: not a local directory and could not be fetched from the Hub ({error})"
        raise OSError(message) from error
    return directory


def read_config_dict(directory: str | os.PathLike) -> dict[str, Any]:
    """The `config.json` of a model directory as a dict (a `ValueError` naming the file when it is not a JSON
    object)."""
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return config


def check_safetensors_files(directory: str | os.PathLike) -> None:
    """Raise a `ValueError` naming the first `*.safetensors` file of `directory` that is not readable (a truncated
    or corrupt file); reads the headers only."""
    from safetensors import safe_open

    for path in sorted(Path(directory).glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from None


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` to write the file to; when the block ends without an error it replaces
    `path` in one step (`os.replace`), else it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(descriptor)
    try:
        yield Path(name)
        os.replace(name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """`Path(path).write_text(text)`, atomically (see `atomic_path`)."""
    with atomic_path(path) as partial:
        partial.write_text(text)


@contextlib.contextmanager
def staged_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to `directory` to save into (e.g. with `save_pretrained`). When the block ends without
    an error, every file saved there replaces its namesake in `directory`, each in one step (`config.json` last, so
    that a directory with a config holds a complete model); on an error nothing in `directory` changes. Weight files
    of an earlier save that this one did not write are then removed (as `save_pretrained` does: a single file
    replacing shards), other files are kept."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory}: exists and is not a directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        yield staging
        files = [path for path in staging.rglob("*") if not path.is_dir()]
        files.sort(key=lambda path: path.name == "config.json")  # last
        written = {path.relative_to(staging) for path in files}
        for path in files:
            target = directory / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        if any(_is_weight_file(name) for name in written):
            for stale in [path for path in directory.iterdir() if _is_weight_file(path.name)]:
                if Path(stale.name) not in written:
                    stale.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_weight_file(name: str | os.PathLike) -> bool:
    """Whether `name` is one of `save_pretrained`'s weight files (single, shard or index)."""
    name = Path(name).name
    return name.startswith(("model", "pytorch_model")) and name.endswith((".safetensors", ".bin", ".index.json"))
