"""The metrics section times the metrics' updates per image and mask AP's compute at the sizes of the options."""

from benchmarks.sections import metrics
from tests.benchmarks.helpers import run_tiny_section


def test_metrics_section_rows_follow_the_options(monkeypatch):
    monkeypatch.setattr(metrics, "MASK_AP_IMAGES", 10)  # COCOeval's time grows with the images
    results = run_tiny_section("metrics")
    assert [result.case for result in results] == [
        "PanopticQuality.update, 32x32, 30 segments",
        "MeanIoU.update, 32x32, 150 classes",
        "MaskAP.update, 16x16, 100 predictions",
        "MaskAP.compute, 10 images x 100 predictions",
    ]
    assert all(result.ours.n == 2 and result.ours.min > 0 and result.reference is None for result in results)
