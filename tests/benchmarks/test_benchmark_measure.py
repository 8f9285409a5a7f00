"""The benchmark's measuring tools measure what they claim (no speed is asserted)."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.measure import (
    Stats,
    count_flops,
    paired_ratios,
    peak_rss_delta,
    run_in_fresh_process,
    time_interleaved,
)


def test_stats_and_paired_ratios():
    stats = Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.median, stats.q1, stats.q3, stats.min, stats.max, stats.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    ratios = paired_ratios([2.0, 4.0, 9.0], [1.0, 4.0, 3.0])  # per pair: 2, 1, 3
    assert (ratios.median, ratios.min, ratios.max) == (2.0, 1.0, 3.0)


def test_time_interleaved_alternates_the_order_and_skips_warmup():
    calls = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(samples["a"]), len(samples["b"])] == [3, 3]
    assert all(seconds >= 0 for seconds in samples["a"] + samples["b"])


def test_count_flops_includes_the_cpu_attention_kernel():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    query = key = value = torch.randn(2, 3, 10, 8)  # (B, heads, T, D)
    assert count_flops(lambda: F.scaled_dot_product_attention(query, key, value)) == 4 * 2 * 3 * 10 * 10 * 8


def test_peak_rss_delta_sees_a_temporary_allocation():
    size = 200 * 2**20

    def step():
        buffer = torch.ones(size // 4)  # touched, then freed when the step returns
        return buffer.sum()

    (delta,) = peak_rss_delta(step, repeats=1)
    assert size * 0.95 < delta < size * 1.3


def test_run_in_fresh_process_passes_arguments_and_environment_and_names_failures():
    assert run_in_fresh_process("os:getenv", {"key": "EOMT_PROBE"}, env={"EOMT_PROBE": "from the parent"}) == (
        "from the parent"
    )
    assert run_in_fresh_process("os:getenv", {"key": "EOMT_PROBE"}) is None  # only where it was passed
    with pytest.raises(RuntimeError, match=r"(?s)os:getenv\(\{'nope': 1\}\) failed in a fresh process:\n.*TypeError"):
        run_in_fresh_process("os:getenv", {"nope": 1})
