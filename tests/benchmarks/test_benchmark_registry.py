"""The section registry: every section module registers itself; `--sections` selects by name and device."""

import sys

import pytest
import torch

from benchmarks import registry
from benchmarks.registry import SECTION_MODULES, describe_sections, load_sections, select_sections

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_every_module_registers_its_section_in_the_listed_order():
    sections = load_sections()
    modules = [section.run.__module__ for section in sections.values()]
    assert modules == [f"benchmarks.sections.{name}" for name in SECTION_MODULES]
    assert list(sections)[:8] == [
        "forward", "end-to-end", "post-processing", "training", "small-training", "throughput", "fast", "export"
    ]
    assert all(f"\n  {key} " in describe_sections() for key in sections)


def test_all_means_the_default_sections_that_fit_the_device():
    default = ["forward", "end-to-end", "post-processing", "training", "small-training", "throughput", "fast", "export"]
    assert [section.key for section in select_sections("all", CPU)] == default
    assert [section.key for section in select_sections("all", CUDA)] == [*default, "gpu-fps", "gpu-throughput"]
    assert [section.key for section in select_sections("loss, profile", CPU)] == ["loss", "profile"]  # when named


def test_unknown_and_cuda_only_sections_are_named():
    with pytest.raises(ValueError, match=r"unknown section 'nope'; choose from forward, end-to-end, .*eval-memory"):
        select_sections("forward,nope", CPU)
    with pytest.raises(ValueError, match=r"section 'gpu-fps' needs --device cuda \(or --rehearse"):
        select_sections("gpu-fps", CPU)
    assert [section.key for section in select_sections("gpu-fps,gpu-throughput", CPU, rehearse=True)] == [
        "gpu-fps", "gpu-throughput"
    ]  # a check on the CPU that they run


def test_a_section_that_needs_a_missing_package_is_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_pycocotools(name, *args, **kwargs):
        if name.split(".")[0] == "pycocotools":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_pycocotools)
    for module in [name for name in sys.modules if name == "benchmarks.sections.predict" or name.startswith(
            ("training.inference", "training.metrics.mask_ap"))]:  # fmt: skip
        monkeypatch.delitem(sys.modules, module)
    load_sections()
    monkeypatch.delitem(registry.SECTIONS, "predict")  # as if its module had never been imported
    monkeypatch.setattr(registry, "UNAVAILABLE", {})
    sections = load_sections()
    assert "predict" not in sections and "forward" in sections
    assert registry.UNAVAILABLE == {"predict": "No module named 'pycocotools'"}
    assert "  predict          unavailable here: No module named 'pycocotools'" in describe_sections()
    with pytest.raises(ValueError, match="section 'predict' is unavailable here: No module named 'pycocotools'"):
        select_sections("forward,predict", CPU)
