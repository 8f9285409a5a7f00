"""Hostile inputs as data: each `Case` names an entry point, how to build its input and what must happen.

A table of cases lives in a `test_robustness_*.py` module of this folder and runs through `check_case`, one
parametrized test per table:

    CASES = [
        Case("train", "negative steps", lambda c: ["--data", c.coco, "--out", c.dir / "out", *TINY, "--steps", "-5"],
             expect=["--steps", "expected an integer >= 1"]),
        Case("from_pretrained", "truncated weights", lambda c: lambda: EoMTForUniversalSegmentation.from_pretrained(
             truncate(c.copy("model") / "model.safetensors")), expect=["{dir}/model/model.safetensors"]),
    ]

    @pytest.mark.parametrize("case", CASES, ids=case_id)
    def test_hostile_input(case, workspace, tmp_path, capsys, caplog):
        check_case(case, workspace, tmp_path, capsys, caplog)

Another module adds rows by defining its own table and test the same way (e.g. `eomt predict`'s).

`Case` fields:
- `entry`: an `eomt` command (`COMMANDS`: "train", "evaluate", "convert", ...) or a Python entry point
  ("processor", "pipeline", "from_pretrained", "data", ...; any other name).
- `name`: what is hostile; the test id is `entry-name`.
- `build(c)`: makes the input in the case's folder and returns, for a command, its arguments after `eomt ENTRY`; for
  a Python entry, a function of no arguments to call. `c` is a `CaseContext`: `c.dir` (a fresh folder for the case),
  the session's read-only artifacts (`c.model`, `c.coco`, ... see `Workspace`) and `c.copy(name)` (a private copy of
  one, in `c.dir`, to break).
- `expect`: substrings of the error message (the file or option it names and what is wrong); `{dir}` stands for
  `c.dir`.
- `status`: a command's exit status: 2 refused (bad option, model, data or file; nothing done), 3 stopped part-way or
  done in part (what was done is kept and named; `eomt predict`: some inputs unusable, the others done), 0 done
  (with `expect` in a logged warning).
- `error_lines`: for a command, all of its `eomt ENTRY: error:` lines, one entry per line (in any order), each the
  substrings that line holds (one line per unusable input); None: not counted.
- `error`: for a Python entry, the exception type raised; None: no exception, `expect` in a logged warning.
- `keeps`: paths under `c.dir` whose files must be unchanged afterwards (nothing lost); `absent`: paths that must
  not exist afterwards (nothing half-written); `present`: paths that must (what was kept).
- `verify(c)`: any further check of what the case left in `c.dir` (e.g. the images `eomt predict` listed).
- `marks`: pytest marks of the case.

The checks: a command prints `eomt ENTRY: error: ...` (argparse's own errors have that form too) containing every
`expect`, and no traceback; at exit status 0 it prints no such line; a Python entry raises `error` with every `expect`
in its message.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from training.commands import COMMANDS, main

COMMAND_NAMES = tuple(module.__name__.rpartition(".")[2] for module in COMMANDS)


@dataclass(frozen=True)
class Case:
    """One hostile input and what must happen (see the module docstring)."""

    entry: str
    name: str
    build: Callable[[CaseContext], Sequence[Any] | Callable[[], Any]]
    expect: Sequence[str] = ()
    status: int = 2
    error_lines: Sequence[Sequence[str]] | None = None
    error: type[BaseException] | None = ValueError
    keeps: Sequence[str] = ()
    absent: Sequence[str] = ()
    present: Sequence[str] = ()
    verify: Callable[[CaseContext], None] | None = None
    marks: Sequence[Any] = field(default_factory=tuple)


def case_id(case: Case) -> str:
    return f"{case.entry}-{case.name}".replace(" ", "-")


def as_params(cases: Sequence[Case]) -> list:
    """`cases` for `pytest.mark.parametrize`, with their ids and marks."""
    return [pytest.param(case, id=case_id(case), marks=list(case.marks)) for case in cases]


class Workspace:
    """Tiny read-only artifacts shared by every case of the session, each built on first use by
    `builders[name](folder, workspace)` (`conftest.py` lists them)."""

    def __init__(self, root: Path, builders: dict[str, Callable[[Path, Workspace], Path]]) -> None:
        self.root, self.builders, self.built = root, builders, {}

    def get(self, name: str) -> Path:
        if name not in self.built:
            self.built[name] = self.builders[name](self.root / name, self)
        return self.built[name]


class CaseContext:
    """What a case's `build` sees: `dir`, the workspace's artifacts as attributes, and `copy`."""

    def __init__(self, workspace: Workspace, directory: Path) -> None:
        self.workspace, self.dir = workspace, directory

    def __getattr__(self, name: str) -> Path:
        if name in ("workspace", "dir"):
            raise AttributeError(name)
        return self.workspace.get(name)

    def copy(self, name: str, as_name: str | None = None) -> Path:
        """A private copy of artifact `name` at `dir / (as_name or name)`."""
        source, target = self.workspace.get(name), self.dir / (as_name or name)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target

    @cached_property
    def replacements(self) -> dict[str, str]:
        return {"{dir}": str(self.dir)}

    def text(self, template: str) -> str:
        for key, value in self.replacements.items():
            template = template.replace(key, value)
        return template


def snapshot(paths: list[Path]) -> dict[str, str]:
    """A digest of every file under `paths`."""
    digests = {}
    for root in paths:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                digests[str(path)] = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    return digests


def check_case(case: Case, workspace: Workspace, tmp_path: Path, capsys, caplog) -> None:
    """Build the case's input, run it and check its outcome (see the module docstring)."""
    context = CaseContext(workspace, tmp_path)
    built = case.build(context)
    kept = [tmp_path / path for path in case.keeps]
    assert all(path.exists() for path in kept), f"the case keeps {case.keeps}: build them"
    before = snapshot(kept)
    expected = [context.text(text) for text in case.expect]
    caplog.set_level(logging.WARNING)
    if case.entry in COMMAND_NAMES:
        capsys.readouterr()
        try:
            status = main([case.entry, *(str(argument) for argument in built)])
        except SystemExit as exit_:  # argparse
            status = exit_.code
        captured = capsys.readouterr()
        assert status == case.status, f"exit status {status}, expected {case.status}; stderr:\n{captured.err}"
        assert "Traceback" not in captured.err + captured.out, captured.err
        errors = [line for line in captured.err.splitlines() if line.startswith(f"eomt {case.entry}: error: ")]
        if case.error_lines is not None:
            check_error_lines(errors, [[context.text(text) for text in line] for line in case.error_lines])
        if case.status == 0:
            assert not errors, f"exit status 0 with errors:\n{captured.err}"
            message = caplog.text + captured.err
        else:
            assert errors, f"no `eomt {case.entry}: error:` line in:\n{captured.err}"
            message = captured.err[captured.err.index(errors[0]) :]
    elif case.error is None:
        built()
        message = caplog.text
    else:
        with pytest.raises(case.error) as raised:
            built()
        message = str(raised.value)
    missing = [text for text in expected if text not in message]
    assert not missing, f"{missing} not in the message:\n{message}"
    assert snapshot(kept) == before, f"files under {case.keeps} changed"
    assert not [path for path in case.absent if (tmp_path / path).exists()], f"one of {case.absent} was written"
    assert all((tmp_path / path).exists() for path in case.present), f"one of {case.present} is missing"
    if case.verify is not None:
        case.verify(context)


def check_error_lines(errors: list[str], expected: list[list[str]]) -> None:
    """`errors` are the `expected` lines, in any order: as many, and each expected line's texts in exactly one."""
    assert len(errors) == len(expected), f"{len(errors)} error lines, expected {len(expected)}:\n" + "\n".join(errors)
    for texts in expected:  # in any order: a folder lists its files in the file system's order
        assert sum(all(text in line for text in texts) for line in errors) == 1, (texts, errors)


# ---- ways to break a file ----


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut `path` to its first `keep` fraction (an interrupted write)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def edit_json(path: Path, edit: Callable[[Any], Any]) -> Path:
    """Rewrite the JSON file `path` with `edit(document)` applied (in place, or its return value when not None)."""
    import json

    document = json.loads(path.read_text())
    edited = edit(document)
    path.write_text(json.dumps(document if edited is None else edited))
    return path
