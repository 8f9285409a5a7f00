"""What every accumulator shares (training.metrics.base): merging equals seeing all images, reset, and a state that
does not grow with the images."""

import pytest
import torch

from tests.training.metrics.helpers import MAIN_RESULT, METRICS, assert_results_close, filled


@pytest.mark.parametrize("name", sorted(METRICS))
def test_merging_two_accumulators_equals_one_on_all_images(name):
    metric_cls, kwargs, cases = METRICS[name]
    whole = filled(metric_cls, cases, **kwargs)
    first, second = filled(metric_cls, cases[::2], **kwargs), filled(metric_cls, cases[1::2], **kwargs)
    assert first.compute()[MAIN_RESULT[name]] != pytest.approx(whole.compute()[MAIN_RESULT[name]])
    first.merge(second)
    assert_results_close(first.compute(per_class=True), whole.compute(per_class=True))
    first.reset()
    second.reset()
    first.merge(second)
    assert_results_close(first.compute(), metric_cls(**kwargs).compute())


def footprint(metric):
    """Shape of every tensor and length of every container the metric holds."""

    def size(value):
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        return len(value) if isinstance(value, (list, tuple, dict)) else None

    return {key: size(value) for key, value in vars(metric).items()}


@pytest.mark.parametrize("name", ["panoptic_quality", "mean_iou"])
def test_state_size_does_not_grow_with_images(name):
    metric_cls, kwargs, cases = METRICS[name]
    metric = filled(metric_cls, cases[:1], **kwargs)
    before = footprint(metric)
    state_before = {key: tensor.clone() for key, tensor in metric.state_dict().items()}
    for case in cases * 10:
        metric.update(*case)
    assert footprint(metric) == before
    assert any(not torch.equal(state_before[key], tensor) for key, tensor in metric.state_dict().items())
