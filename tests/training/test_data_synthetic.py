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
