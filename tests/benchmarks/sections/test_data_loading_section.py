"""The data-loading section reads a generated COCO panoptic set and reports times per sample."""

from benchmarks.sections import data_loading
from tests.benchmarks.helpers import run_tiny_section


def test_data_loading_section_reports_every_stage_per_sample(monkeypatch):
    calls = []
    epoch_function = data_loading.epoch_function

    def counting_epoch_function(dataset, workers):
        epoch = epoch_function(dataset, workers)

        def counted() -> int:
            calls.append((workers, epoch()))
            return calls[-1][1]

        return counted

    monkeypatch.setattr(data_loading, "epoch_function", counting_epoch_function)
    monkeypatch.setattr(data_loading, "DATA_IMAGES", 8)
    results = run_tiny_section("data-loading")
    assert [result.case for result in results] == [
        f"{name}, per sample (32px images)"
        for name in ("validation", "validation, decoded", "decoding", "0 worker(s)", "1 worker(s)")
    ]
    assert sorted(calls) == [(0, data_loading.DATA_IMAGES)] * 2 + [(1, data_loading.DATA_IMAGES)] * 2  # whole epochs
    assert all(result.ours.n == 2 and result.ours.min > 0 for result in results)
