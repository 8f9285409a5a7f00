"""The benchmarks' synthetic inputs look like what they stand for."""

from benchmarks.inputs import random_photos, synthetic_outputs, window_offsets


def test_synthetic_outputs_look_trained():
    class_logits, mask_logits = synthetic_outputs(3, num_queries=50, num_classes=10, mask_size=(32, 32), num_objects=(4, 8))
    confident = class_logits.softmax(-1)[..., :-1].amax(-1) > 0.5
    assert ((confident.sum(1) >= 4) & (confident.sum(1) <= 8)).all()
    no_object = class_logits.softmax(-1)[..., -1] > 0.9
    assert (no_object | confident).all()
    assert mask_logits.shape == (3, 50, 32, 32) and (mask_logits[confident] > 0).any()


def test_window_offsets_are_transformers_split():
    assert window_offsets((640, 853), 640, 1) == [(1, 0, 640), (1, 213, 853)]
    assert window_offsets((640, 640), 640, 0) == [(0, 0, 640)]
    assert window_offsets((2000, 640), 640, 0)[-1] == (0, 1360, 2000)


def test_random_photos_are_rgb_of_the_size_and_seeded():
    first, second = random_photos(2, 24, 32, seed=3)
    assert first.mode == "RGB" and first.size == (32, 24) and first.tobytes() != second.tobytes()
    assert random_photos(1, 24, 32, seed=3)[0].tobytes() == first.tobytes()
