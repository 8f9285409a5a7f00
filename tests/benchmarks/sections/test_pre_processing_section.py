"""The pre-processing section compares ours and transformers' processors on the same image and settings."""

from tests.benchmarks.helpers import run_tiny_section


def test_both_processors_give_the_same_pixel_values():
    results = run_tiny_section("pre-processing")
    assert [result.case for result in results] == [
        "panoptic 640, padded (480x640 image)",
        "semantic 512, windows (512x683 image)",
    ]
    assert all(result.notes == "same pixel_values: yes" and result.ratio.median > 0 for result in results)
