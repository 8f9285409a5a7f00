"""The benchmark's sections: each module of `benchmarks.sections` registers its sections here with `register_section`;
`load_sections` imports them in the order of `SECTION_MODULES`, which is the order they run and are listed in."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
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
    "gpu_throughput",
    "profile",
    "pre_processing",
    "loss",
    "metrics",
    "predict",
    "data_loading",
    "eval_memory",
    "learning",
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
    run: Callable[[BenchmarkContext], Iterable[Result]]
    cuda_only: bool = False
    in_all: bool = True


SECTIONS: dict[str, Section] = {}

# Section modules that could not be imported for want of an optional package (e.g. pycocotools on a machine with
# PyTorch alone): module name -> the import error's message.
UNAVAILABLE: dict[str, str] = {}

# The packages of this project: a missing one is a bug, never an optional package.
_PROJECT_PACKAGES = ("benchmarks", "modeling_eomt", "image_processing", "training")


def register_section(key: str, title: str, cuda_only: bool = False, in_all: bool = True) -> Callable:
    """Decorator adding `function(context) -> list[Result]` (or a generator of the rows, which are then saved as they
    come) to the benchmark under `key`; `in_all=False` sections run only when `--sections` names them, `cuda_only`
    ones only with `--device cuda` (or `--rehearse`)."""

    def decorator(function: Callable[[BenchmarkContext], list[Result]]) -> Callable:
        SECTIONS[key] = Section(key, title, function, cuda_only, in_all)
        return function

    return decorator


def load_sections() -> dict[str, Section]:
    """Every section whose module imports, in the order of `SECTION_MODULES`; those that need a package missing here
    are left out (and listed in `UNAVAILABLE`)."""
    for name in SECTION_MODULES:
        try:
            importlib.import_module(f"benchmarks.sections.{name}")
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] in ("", *_PROJECT_PACKAGES):
                raise
            UNAVAILABLE[name] = str(error)
    module_index = {f"benchmarks.sections.{name}": index for index, name in enumerate(SECTION_MODULES)}
    return dict(sorted(SECTIONS.items(), key=lambda item: module_index[item[1].run.__module__]))


def select_sections(names: str, device: torch.device, rehearse: bool = False) -> list[Section]:
    """The sections `--sections` names (comma-separated), or for `all` those in the default set that fit `device`;
    a `ValueError` names an unknown or unavailable section, or a CUDA section without CUDA (allowed with `rehearse`:
    a check on the CPU that it runs)."""
    sections = load_sections()
    if names == "all":
        applies = [section for section in sections.values() if device.type == "cuda" or not section.cuda_only]
        return [section for section in applies if section.in_all]
    selected = []
    for name in (name.strip() for name in names.split(",") if name.strip()):
        module = name.replace("-", "_")
        if name not in sections and module in UNAVAILABLE:
            raise ValueError(f"section {name!r} is unavailable here: {UNAVAILABLE[module]}")
        if name not in sections:
            raise ValueError(f"unknown section {name!r}; choose from {', '.join(sections)}")
        if sections[name].cuda_only and device.type != "cuda" and not rehearse:
            raise ValueError(f"section {name!r} needs --device cuda (or --rehearse to check on the CPU that it runs)")
        selected.append(sections[name])
    return selected


def describe_sections() -> str:
    """One line per section for `eomt benchmark --help`."""
    lines = ["sections (in the order they run):"]
    for section in load_sections().values():
        conditions = [("CUDA only", section.cuda_only), ("only when named", not section.in_all)]
        suffix = "".join(f" ({name})" for name, holds in conditions if holds)
        lines.append(f"  {section.key:<16} {section.title}{suffix}")
    for module, reason in UNAVAILABLE.items():
        lines.append(f"  {module.replace('_', '-'):<16} unavailable here: {reason}")
    return "\n".join(lines)
