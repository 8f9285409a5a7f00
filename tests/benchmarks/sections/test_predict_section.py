"""The predict section times whole `predict_files` runs over its images, in float32 and bfloat16."""

import json

import torch

from benchmarks.sections import predict
from tests.benchmarks.helpers import run_tiny_section


def test_predict_section_times_whole_runs_in_both_dtypes(monkeypatch):
    runs = []

    def recording_predict_files(*args, dtype, **kwargs):
        path, problems = predict_files(*args, dtype=dtype, **kwargs)
        runs.append((dtype, len(json.loads(path.read_text())["annotations"]), problems))
        return path, problems

    predict_files = predict.predict_files
    monkeypatch.setattr(predict, "predict_files", recording_predict_files)
    results = run_tiny_section("predict")
    assert sorted(runs, key=str) == [(torch.bfloat16, predict.PREDICT_IMAGES, [])] * 2 + [
        (torch.float32, predict.PREDICT_IMAGES, [])
    ] * 2  # two timed rounds, every image segmented
    assert [result.case for result in results] == [
        "per image, float32 (S/16, 32px, 5 queries, 24x32 images)",
        "per image, bfloat16",
        "forward, bfloat16 weights cast",
    ]
    assert results[1].ratio.median > 0 and results[2].ratio.median > 0
