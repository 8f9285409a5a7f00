"""The section registry: every section module registers itself; `--sections` selects by name and device."""

import pytest
import torch

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
    assert [section.key for section in select_sections("all", CUDA)] == [*default, "gpu-fps"]
    assert [section.key for section in select_sections("loss, profile", CPU)] == ["loss", "profile"]  # when named


def test_unknown_and_cuda_only_sections_are_named():
    with pytest.raises(ValueError, match=r"unknown section 'nope'; choose from forward, end-to-end, .*eval-memory"):
        select_sections("forward,nope", CPU)
    with pytest.raises(ValueError, match="section 'gpu-fps' needs --device cuda"):
        select_sections("gpu-fps", CPU)
