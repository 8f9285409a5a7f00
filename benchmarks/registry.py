"""The benchmark's sections: each module of `benchmarks.sections` registers its sections here with `register_section`;
`load_sections` imports them in the order of `SECTION_MODULES`, which is the order they run and are listed in."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.measure import Stats, paired_ratios

if TYPE_CHECKING:
    import torch

    from benchmarks.context import BenchmarkContext

SECTION_MODULES = (
    "forward",
    "end_to_end",
    "post_processing",
    "training",
    "small_training",
    "throughput",
    "fast",
    "export",
    "gpu_fps",
    "profile",
    "pre_processing",
    "loss",
    "metrics",
    "predict",
    "data_loading",
    "eval_memory",
)


@dataclass
class Result:
    """One row of the report: times in seconds, memory in bytes; `ratio` is ours / transformers (interleaved runs)
    unless the notes say otherwise."""

    section: str
    case: str
    ours: Stats | None = None
    reference: Stats | None = None
    ratio: Stats | None = None
    unit: str = "s"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def timed(cls, section: str, case: str, ours: Sequence[float], reference: Sequence[float], **fields: Any) -> Result:
        """The row of two series of seconds from the same interleaved rounds: their statistics and the per-round
        ratios ours / reference (`paired_ratios`)."""
        return cls(section, case, Stats.of(ours), Stats.of(reference), paired_ratios(ours, reference), **fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "case": self.case,
            "unit": self.unit,
            "ours": self.ours.to_dict() if self.ours else None,
            "reference": self.reference.to_dict() if self.reference else None,
            "ratio": self.ratio.to_dict() if self.ratio else None,
            "notes": self.notes,
            **self.extra,
        }


@dataclass
class Section:
    key: str
    title: str
    run: Callable[[BenchmarkContext], list[Result]]
    cuda_only: bool = False
    in_all: bool = True


SECTIONS: dict[str, Section] = {}


def register_section(key: str, title: str, cuda_only: bool = False, in_all: bool = True) -> Callable:
    """Decorator adding `function(context) -> list[Result]` to the benchmark under `key`; `in_all=False` sections run
    only when `--sections` names them, `cuda_only` ones only with `--device cuda`."""

    def decorator(function: Callable[[BenchmarkContext], list[Result]]) -> Callable:
        SECTIONS[key] = Section(key, title, function, cuda_only, in_all)
        return function

    return decorator


def load_sections() -> dict[str, Section]:
    """Every section, in the order of `SECTION_MODULES`."""
    for name in SECTION_MODULES:
        importlib.import_module(f"benchmarks.sections.{name}")
    module_index = {f"benchmarks.sections.{name}": index for index, name in enumerate(SECTION_MODULES)}
    return dict(sorted(SECTIONS.items(), key=lambda item: module_index[item[1].run.__module__]))


def select_sections(names: str, device: torch.device) -> list[Section]:
    """The sections `--sections` names (comma-separated), or for `all` those in the default set that fit `device`;
    a `ValueError` names an unknown section or a CUDA section without CUDA."""
    sections = load_sections()
    if names == "all":
        applies = [section for section in sections.values() if device.type == "cuda" or not section.cuda_only]
        return [section for section in applies if section.in_all]
    selected = []
    for name in (name.strip() for name in names.split(",") if name.strip()):
        if name not in sections:
            raise ValueError(f"unknown section {name!r}; choose from {', '.join(sections)}")
        if sections[name].cuda_only and device.type != "cuda":
            raise ValueError(f"section {name!r} needs --device cuda")
        selected.append(sections[name])
    return selected


def describe_sections() -> str:
    """One line per section for `eomt benchmark --help`."""
    lines = ["sections (in the order they run):"]
    for section in load_sections().values():
        conditions = [("CUDA only", section.cuda_only), ("only when named", not section.in_all)]
        suffix = "".join(f" ({name})" for name, holds in conditions if holds)
        lines.append(f"  {section.key:<16} {section.title}{suffix}")
    return "\n".join(lines)
