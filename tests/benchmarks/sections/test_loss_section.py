"""The loss section times ours and transformers' loss on the same inputs, and both give the same value."""

import pytest

from tests.benchmarks.helpers import run_tiny_section


def test_both_losses_give_the_same_value_on_the_same_points():
    results = run_tiny_section("loss")
    assert [result.case for result in results] == [
        f"{name}, 5 queries, 4 levels, 10 targets of {size}px"
        for size in (32, 8)  # the input resolution, the mask-logit resolution
        for name in ("loss", "loss + backward")
    ]
    for result in results:
        assert result.extra["values"]["ours"] == pytest.approx(result.extra["values"]["reference"], rel=1e-5)
    assert results[0].extra["values"] == results[1].extra["values"]  # the backward pass does not change the value
