"""The output folder of `eomt predict` as a resumable, shardable store.

- `run.json`, the run manifest: the task, the model's weights, the processor and the options the folder's results were
  made with. A run into a folder made with other settings stops with an error naming what differs (unless
  `overwrite`, which first removes every file a run writes there).
- `records/rank<R>.jsonl`: one JSON line per segmented image, appended and flushed by process `R` right after the
  image's PNGs are written, so that a killed run loses nothing it finished. A later run with the same settings
  reads every record file (whatever the number of processes then) and skips the images already done.
- `predictions.json`: merged from the records by process 0 once every process is done, sorted by image name (so it is
  the same bytes whatever the number of processes), written to a temporary file and renamed.

Images are shared out by name: process `hash(name) mod world_size` segments it (a stable 64-bit hash), so every
process walks the same inputs and picks its own without a list of all of them; names that two images share get
`~2`, `~3`, ... from the process that owns the name (`NameClaims`).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from modeling_eomt.checkpoints.io import atomic_path

PREDICTIONS_FILE = "predictions.json"
MANIFEST_FILE = "run.json"
RECORDS_DIR = "records"
RESULT_DIRS = ("overlays", "panoptic", "semantic")
MANIFEST_FORMAT = 1
# Long enough for the slowest process to finish its share before the others, waiting at the final barrier, give up.
BARRIER_TIMEOUT = timedelta(hours=24)


class OutputConflictError(ValueError):
    """The output folder cannot take this run: it holds results of another run (other model, task, options or
    inputs), or it cannot be written."""


# ----------------------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------------------


class Processes:
    """This process's rank among `world_size` processes and the collective steps a sharded run needs; for one
    process every step is local."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = rank, world_size

    @classmethod
    def current(cls) -> Processes:
        """The `torch.distributed` process group if one is running, else this process alone."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Process 0's `value`, in every process."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        values = [value]
        dist.broadcast_object_list(values, src=0)
        return values[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order, in every process."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


@contextlib.contextmanager
def launched_processes() -> Iterator[Processes]:
    """The processes started by `accelerate launch` / `torchrun` (`WORLD_SIZE`, `RANK` and the rendezvous in the
    environment), joined into a gloo process group for the run and left at the end; this process alone otherwise.
    An already running process group is used as it is."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield Processes.current()
        return
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)  # collectives of Python objects only: gloo on any device
    try:
        yield Processes.current()
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------------
# The run manifest
# ----------------------------------------------------------------------------------------------------------------------


def weights_fingerprint(model: Any) -> str:
    """A SHA-256 of the model's configuration and of up to 4096 evenly spaced values of every weight: it changes when
    the model is retrained or edited, and costs little even for large models."""
    digest = hashlib.sha256()
    volatile = ("_name_or_path", "transformers_version")
    config = {key: value for key, value in model.config.to_dict().items() if key not in volatile}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)][:4096].float().cpu().numpy()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        leaves: dict[str, Any] = {}
        for key, item in value.items():
            leaves.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return leaves
    return {prefix: value}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def manifest_differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two manifests, one `key: earlier before, now now` per setting (`model.source`, where the
    weights were read from, does not count: the weights do)."""
    before, after = (_leaves(json.loads(json.dumps(manifest, default=str))) for manifest in (earlier, now))
    differences = []
    for key in sorted(set(before) | set(after)):
        if key == "model.source" or before.get(key) == after.get(key):
            continue
        if key == "model.weights":
            sources = before.get("model.source"), after.get("model.source")
            differences.append(f"model: other weights ({sources[0]} before, {sources[1]} now)")
        else:
            differences.append(f"{key}: {_short(before.get(key))} before, {_short(after.get(key))} now")
    return differences


def remove_results(out_dir: Path) -> None:
    """Remove every file and folder a run writes in `out_dir` (and nothing else)."""
    for name in (PREDICTIONS_FILE, MANIFEST_FILE, RECORDS_DIR, *RESULT_DIRS):
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for name in (PREDICTIONS_FILE, MANIFEST_FILE):  # temporary files of `atomic_path` left by a killed run
        for leftover in out_dir.glob(f".{name}.*.partial"):
            leftover.unlink()


def prepare_output(out_dir: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Make `out_dir` ready for a run described by `manifest`: emptied of earlier results with `overwrite`; else an
    `OutputConflictError` if it holds results of a run with other settings (or results without a manifest). The
    manifest is then written (atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_FILE
    remedy = "pass --overwrite (overwrite=True) to replace them, or write to another folder"
    if overwrite:
        remove_results(out_dir)
    elif manifest_path.is_file():
        try:
            earlier = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as error:
            raise OutputConflictError(f"{manifest_path}: unreadable run manifest ({error}); {remedy}") from None
        differences = manifest_differences(earlier, manifest)
        if differences:
            raise OutputConflictError(
                f"{out_dir} holds predictions of a run with other settings ({'; '.join(differences)}); {remedy}"
            )
    elif any((out_dir / name).exists() for name in (PREDICTIONS_FILE, RECORDS_DIR, *RESULT_DIRS)):
        raise OutputConflictError(f"{out_dir} holds predictions without a run manifest ({MANIFEST_FILE}); {remedy}")
    write_atomically(manifest_path, [json.dumps(manifest, indent=2, default=str) + "\n"])


def write_atomically(path: Path, chunks: Iterable[str]) -> None:
    """Write the text `chunks` to `path` through `atomic_path`: a reader, or a run killed meanwhile, sees the previous
    file or the new one, never a part."""
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as file:
        file.writelines(chunks)


# ----------------------------------------------------------------------------------------------------------------------
# Names: which process segments an image, and which name it gets
# ----------------------------------------------------------------------------------------------------------------------


def hash64(text: str) -> int:
    """A 64-bit hash of `text`, the same in every process and on every machine (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def base_name(name: str) -> str:
    """`name` without the `~2`, `~3`, ... that tell apart images of the same name."""
    return re.sub(r"(~\d+)+$", "", name)


def owner(name: str, world_size: int) -> int:
    """The rank of the process that segments the images named `name` (or `name~k`)."""
    return hash64(base_name(name)) % world_size


class NameIndex:
    """A map of 64-bit keys to 64-bit values in about 16 bytes per entry: sorted arrays plus a small dict of the
    latest entries, merged into the arrays when it grows."""

    def __init__(self, merge_every: int = 65536) -> None:
        self._keys = np.empty(0, dtype=np.uint64)
        self._values = np.empty(0, dtype=np.uint64)
        self._recent: dict[int, int] = {}
        self._merge_every = merge_every

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def get(self, key: int) -> int | None:
        if key in self._recent:
            return self._recent[key]
        position = int(np.searchsorted(self._keys, np.uint64(key)))
        if position < len(self._keys) and int(self._keys[position]) == key:
            return int(self._values[position])
        return None

    def add(self, key: int, value: int) -> None:
        """Map `key` to `value` unless it is mapped already."""
        if self.get(key) is None:
            self._recent[key] = value
            if len(self._recent) >= self._merge_every:
                self._merge()

    def _merge(self) -> None:
        keys = np.concatenate([self._keys, np.fromiter(self._recent.keys(), np.uint64, len(self._recent))])
        values = np.concatenate([self._values, np.fromiter(self._recent.values(), np.uint64, len(self._recent))])
        order = np.argsort(keys, kind="stable")
        self._keys, self._values, self._recent = keys[order], values[order], {}


class NameClaims:
    """The names this process owns and the image each was given to (as hashes), over this run and the earlier runs
    into the same folder."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.index = NameIndex()

    def owns(self, name: str) -> bool:
        return owner(name, self.world_size) == self.rank

    def load(self, records_dir: Path) -> int:
        """Take in the names recorded in `records_dir` that this process owns; returns how many."""
        count = 0
        for name, source in iter_record_keys(records_dir):
            if self.owns(name):
                self.index.add(hash64(name), hash64(source))
                count += 1
        return count

    def claim(self, name: str, identity: str) -> tuple[str, bool]:
        """The name the image `identity` gets (`name`, or `name~k` if another image has it), and whether it is new:
        False when that name was given to this very image before (in an earlier run, or earlier in this one)."""
        image = hash64(identity)
        candidate, count = name, 1
        while True:
            key = hash64(candidate)
            given = self.index.get(key)
            if given is None:
                self.index.add(key, image)
                return candidate, True
            if given == image:
                return candidate, False
            count += 1
            candidate = f"{name}~{count}"


# ----------------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_NAME_PREFIX, _SOURCE_PREFIX = '{"name": ', ', "source": '


def record_line(name: str, source: str, fields: dict[str, Any]) -> str:
    """One record: `{"name", "source", **fields}` on one line."""
    return json.dumps({"name": name, "source": source, **fields}) + "\n"


def record_key(line: str) -> tuple[str, str]:
    """`(name, source)` of a record line, read without parsing the rest of it."""
    if line.startswith(_NAME_PREFIX):
        name, end = _DECODER.raw_decode(line, len(_NAME_PREFIX))
        if line.startswith(_SOURCE_PREFIX, end):
            source, _ = _DECODER.raw_decode(line, end + len(_SOURCE_PREFIX))
            return name, source
    record = json.loads(line)
    return record["name"], record["source"]


def record_files(records_dir: Path) -> list[Path]:
    return sorted(records_dir.glob("rank*.jsonl")) if records_dir.is_dir() else []


def iter_record_lines(path: Path) -> Iterator[str]:
    """The complete lines of a record file (a last line cut short by a killed run is left out)."""
    with open(path, "rb") as file:
        for raw in file:
            if raw.endswith(b"\n"):
                yield raw.decode("utf-8")


def iter_record_keys(records_dir: Path) -> Iterator[tuple[str, str]]:
    for path in record_files(records_dir):
        for line in iter_record_lines(path):
            with contextlib.suppress(ValueError, KeyError):  # a damaged line: that image is done again
                yield record_key(line)


def _cut_partial_line(path: Path) -> None:
    """Truncate `path` after its last newline (a record cut short by a killed run)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as file:
        end = file.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - 65536)
            file.seek(start)
            block = file.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                if start + newline + 1 < end:
                    file.truncate(start + newline + 1)
                return
            position = start
        file.truncate(0)


class RecordWriter:
    """Appends this process's records to `records/rank<R>.jsonl`, each flushed as it is written."""

    def __init__(self, records_dir: Path, rank: int) -> None:
        records_dir.mkdir(parents=True, exist_ok=True)
        self.path = records_dir / f"rank{rank}.jsonl"
        _cut_partial_line(self.path)
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, name: str, source: str, fields: dict[str, Any]) -> None:
        self.file.write(record_line(name, source, fields))
        self.file.flush()

    def close(self) -> int:
        """Close the file (synced to disk); returns its size in bytes."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.path.stat().st_size


# ----------------------------------------------------------------------------------------------------------------------
# The merge into predictions.json
# ----------------------------------------------------------------------------------------------------------------------


def _spill(chunk: list[tuple[str, str]], path: Path) -> Path:
    chunk.sort()
    with open(path, "w", encoding="utf-8") as file:
        for name, line in chunk:
            file.write(json.dumps(name) + "\t" + line)
    return path


def _read_spill(path: Path) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as file:
        for row in file:
            name, line = row.split("\t", 1)
            yield json.loads(name), line


class _SortedRecords:
    """The records of `records_dir` sorted by name, duplicates dropped; chunks of `chunk_bytes` are sorted in memory
    and merged from temporary files beyond that. Also tells whether every name is a distinct number."""

    def __init__(self, records_dir: Path, scratch: Path, chunk_bytes: int) -> None:
        self.scratch, self.runs, self.chunk, self.count = scratch, [], [], 0
        numbers: list[np.ndarray] = []  # (value, digits) of every numeric name: "009" and "9" are one number
        pending: list[tuple[int, int]] = []
        numeric, size = True, 0
        for path in record_files(records_dir):
            for line in iter_record_lines(path):
                try:
                    name, _ = record_key(line)
                except (ValueError, KeyError):
                    continue
                self.chunk.append((name, line))
                size += len(line)
                if numeric:
                    numeric = name.isascii() and name.isdigit() and len(name) <= 18
                    pending.append((int(name), len(name)) if numeric else (0, 0))
                    if len(pending) >= 65536:
                        numbers.append(np.unique(np.array(pending, dtype=np.int64), axis=0))
                        pending = []
                if size >= chunk_bytes:
                    scratch.mkdir(parents=True, exist_ok=True)
                    self.runs.append(_spill(self.chunk, scratch / f"run{len(self.runs)}.tsv"))
                    self.chunk, size = [], 0
        names = np.unique(np.concatenate([*numbers, np.array(pending, dtype=np.int64).reshape(-1, 2)]), axis=0)
        self.numeric = numeric and len(names) > 0 and len(np.unique(names[:, 0])) == len(names)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self.chunk.sort()
        streams = [iter(self.chunk), *(_read_spill(run) for run in self.runs)]
        previous, self.count = None, 0
        for name, line in heapq.merge(*streams) if self.runs else streams[0]:
            if name != previous:
                previous = name
                self.count += 1
                yield name, line


def _entries(task: str, records: _SortedRecords) -> Iterator[str]:
    """The JSON text of each entry of `predictions.json`, in name order."""
    for name, line in records:
        record = json.loads(line)
        image_id = int(name) if records.numeric else name
        if task == "instance":
            for detection in record["detections"]:
                yield json.dumps({"image_id": image_id, **detection})
        else:
            fields = {key: value for key, value in record.items() if key not in ("name", "source")}
            yield json.dumps({"image_id": image_id, **fields})


def _joined(entries: Iterator[str]) -> Iterator[str]:
    for index, entry in enumerate(entries):
        yield entry if index == 0 else ", " + entry


def merge_records(
    out_dir: Path, task: str, categories: list[dict[str, Any]], chunk_bytes: int = 64 << 20
) -> tuple[Path, int]:
    """Write `predictions.json` from every record in `out_dir` (see `training.inference` for its format: the same text
    as `json.dumps` of the whole document), sorting at most `chunk_bytes` of records in memory at a time; returns its
    path and the number of images in it."""
    scratch = out_dir / RECORDS_DIR / ".merge"
    path = out_dir / PREDICTIONS_FILE
    try:
        records = _SortedRecords(out_dir / RECORDS_DIR, scratch, chunk_bytes)
        body = _joined(_entries(task, records))
        if task == "instance":
            head, tail = "[", "]"
        else:
            head, tail = '{"annotations": [', '], "categories": ' + json.dumps(categories) + "}"
        write_atomically(path, (chunk for part in ([head], body, [tail]) for chunk in part))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path, records.count
