"""Small generated data sets shared by the data tests (pytest fixtures; import them into a test module)."""

from pathlib import Path

import pytest
from PIL import Image

from training.data.synthetic import (
    synthetic_scene,
    write_synthetic_ade20k,
    write_synthetic_coco_instance,
    write_synthetic_coco_panoptic,
)

SIZE, NUM_TRAIN, NUM_VAL, SEED = 48, 6, 4, 3
VAL = 1  # the split number in synthetic scene seeds


def crop_validation_images(root: Path, width: int) -> None:
    """Crop the validation images and label maps of an ADE20K-style set to `width x 2/3 width` (wider than high, so
    that semantic evaluation with sliding windows of the short side uses two windows per image)."""
    for folder in ("images", "annotations"):
        for path in sorted((Path(root) / folder / "validation").iterdir()):
            with Image.open(path) as image:
                cropped = image.crop((0, 0, width, width * 2 // 3))
            cropped.save(path, **({"quality": 95, "subsampling": 0} if path.suffix == ".jpg" else {}))


def val_scenes(**kwargs):
    """The scenes the writers draw for the validation split."""
    return [synthetic_scene((SEED, VAL, index), size=SIZE, **kwargs) for index in range(NUM_VAL)]


@pytest.fixture(scope="module")
def synthetic_panoptic(tmp_path_factory):
    root = write_synthetic_coco_panoptic(
        tmp_path_factory.mktemp("coco_panoptic"), NUM_TRAIN, NUM_VAL, size=SIZE, seed=SEED, crowd_prob=0.3
    )
    return root, val_scenes(crowd_prob=0.3)


@pytest.fixture(scope="module")
def synthetic_instance(tmp_path_factory):
    root = write_synthetic_coco_instance(
        tmp_path_factory.mktemp("coco_instance"), NUM_TRAIN, NUM_VAL, size=SIZE, seed=SEED, crowd_prob=0.3
    )
    return root, val_scenes(crowd_prob=0.3)


@pytest.fixture(scope="module")
def synthetic_ade(tmp_path_factory):
    root = write_synthetic_ade20k(tmp_path_factory.mktemp("ade20k"), NUM_TRAIN, NUM_VAL, size=SIZE, seed=SEED)
    return root, val_scenes()
