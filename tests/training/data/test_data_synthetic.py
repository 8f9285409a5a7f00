"""The synthetic data sets: reproducible, self-consistent COCO panoptic JSON, and the difficulty knob."""

import json

import numpy as np
import pytest
from PIL import Image

from image_processing.targets import rgb_to_id
from training.data.synthetic import (
    CATEGORY_IDS,
    CLASS_NAMES,
    THING_CLASSES,
    _fill,
    synthetic_scene,
    write_synthetic_coco_panoptic,
)


def test_same_seed_same_data_set(tmp_path):
    first = write_synthetic_coco_panoptic(tmp_path / "a", 3, 2, size=32, seed=7)
    second = write_synthetic_coco_panoptic(tmp_path / "b", 3, 2, size=32, seed=7)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 2 * 5 + 2
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()
    other = write_synthetic_coco_panoptic(tmp_path / "c", 3, 2, size=32, seed=8)
    assert (other / files[-1]).read_bytes() != (first / files[-1]).read_bytes()


def test_panoptic_json_agrees_with_the_pngs(tmp_path):
    root = write_synthetic_coco_panoptic(tmp_path, 4, 0, size=40, seed=1)
    document = json.loads((root / "annotations" / "panoptic_train2017.json").read_text())
    assert [(c["id"], c["name"], c["isthing"]) for c in document["categories"]] == [
        (i, name, int(name in THING_CLASSES)) for i, name in zip(CATEGORY_IDS, CLASS_NAMES)
    ]
    channels_used = set()
    for image, annotation in zip(document["images"], document["annotations"]):
        assert annotation["image_id"] == image["id"] and (image["height"], image["width"]) == (40, 40)
        ids = rgb_to_id(np.asarray(Image.open(root / "annotations" / "panoptic_train2017" / annotation["file_name"])))
        assert set(np.unique(ids)) - {0} == {s["id"] for s in annotation["segments_info"]}
        for segment in annotation["segments_info"]:
            mask = ids == segment["id"]
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert segment["area"] == mask.sum()
            assert segment["bbox"] == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            channels_used |= {c for c in range(3) if (segment["id"] >> (8 * c)) & 255}
    assert channels_used == {0, 1, 2}


def test_scenes_have_stuff_and_mostly_visible_things():
    for seed in range(20):
        scene = synthetic_scene(seed, size=64)
        stuff = [s for s in scene.segments if not s["isthing"]]
        things = [s for s in scene.segments if s["isthing"]]
        assert len(stuff) >= 2 and len(things) >= 1
        for thing in things:  # at least half of every thing stays visible (later things occlude earlier ones)
            visible = (scene.segment_map == thing["id"]).sum()
            assert visible >= 0.5 * _fill(scene.polygons[thing["id"]], 64).sum()


@pytest.mark.parametrize("size", [64, 128])
def test_difficulty_raises_the_noise(size):
    def roughness(difficulty):
        scene = synthetic_scene(3, size=size, difficulty=difficulty)
        pixels = np.asarray(scene.image, float)
        return np.abs(np.diff(pixels, axis=1)).mean()

    assert roughness(0.0) < roughness(0.5) < roughness(1.0)
    with pytest.raises(ValueError, match="difficulty"):
        synthetic_scene(0, difficulty=1.5)


# ---- the learning benchmark's sets (training.data.synthetic_sets) ----


def test_scene_sets_are_reproducible_and_load_as_coco_panoptic(tmp_path):
    from training.data import load_coco_panoptic, validate_dataset
    from training.data.synthetic_sets import SCENE_SETS, write_scene_set

    first = write_scene_set(tmp_path / "a", "B", 3, 1, seed=2, image_size=48)
    second = write_scene_set(tmp_path / "b", "B", 3, 1, seed=2, image_size=48)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4 * 2 + 2 and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    spec = SCENE_SETS["B"]
    source = load_coco_panoptic(first, "train")
    validate_dataset(source)  # raises on any inconsistency between the JSON and the PNGs
    assert list(source.info.id2label.values()) == list(spec.things + spec.stuff)
    assert source.info.thing_ids == tuple(range(len(spec.things)))
    sample = source[0]
    assert sample.image.shape == (48, 48, 3) and len(sample.target) > 0
    with pytest.raises(ValueError, match="unknown scene set 'Z'; choose from A, B, C"):
        write_scene_set(tmp_path / "z", "Z", 1, 1)


def test_a_scene_set_test_split_holds_new_scenes_and_leaves_train_and_val_as_they_were(tmp_path):
    from training.data import load_coco_panoptic, validate_dataset
    from training.data.synthetic_sets import write_scene_set

    without = write_scene_set(tmp_path / "a", "A", 2, 2, seed=3, image_size=32)
    with_test = write_scene_set(tmp_path / "b", "A", 2, 2, seed=3, image_size=32, num_test=2)
    assert not (without / "test2017").exists() and len(list((with_test / "test2017").glob("*.jpg"))) == 2
    for split in ("train2017", "val2017"):
        for image in (without / split).glob("*.jpg"):
            assert image.read_bytes() == (with_test / split / image.name).read_bytes()
    test = load_coco_panoptic(with_test, "test")
    validate_dataset(test)
    test_image = test[0].image
    assert not any(np.array_equal(test_image, load_coco_panoptic(with_test, "val")[i].image) for i in range(2))


def test_scene_sets_differ_in_size_classes_and_objects():
    from training.data.synthetic_sets import SCENE_SETS, scene

    def thing_sides(name):
        sides, things = [], []
        for index in range(12):
            drawn = scene(SCENE_SETS[name], (0, 0, index))
            assert drawn.image.size == (SCENE_SETS[name].image_size,) * 2
            found = [s for s in drawn.segments if s["isthing"]]
            things.append(len(found))
            sides += [np.sqrt((drawn.segment_map == s["id"]).sum()) / SCENE_SETS[name].image_size for s in found]
            assert {s["category_id"] for s in drawn.segments if not s["isthing"]} <= set(
                range(len(SCENE_SETS[name].things), len(SCENE_SETS[name].class_names)))
        return np.median(sides), np.mean(things)

    assert [SCENE_SETS[name].image_size for name in "ABC"] == [128, 96, 256]
    assert [(len(SCENE_SETS[n].things), len(SCENE_SETS[n].stuff)) for n in "ABC"] == [(3, 3), (6, 2), (2, 5)]
    (side_b, count_b), (side_c, count_c) = thing_sides("B"), thing_sides("C")
    assert side_b < side_c / 2 and count_b > 2 * count_c  # many small things against few large ones
