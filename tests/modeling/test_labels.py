"""The `id2label` presets of the datasets the authors' checkpoints were trained on."""

from modeling_eomt.labels import DATASET_CLASSES


def test_dataset_presets():
    assert {name: len(classes) for name, classes in DATASET_CLASSES.items()} == {
        "coco_panoptic": 133, "coco_instance": 80, "ade20k": 150, "cityscapes": 19,
    }  # fmt: skip
    assert DATASET_CLASSES["coco_instance"] == DATASET_CLASSES["coco_panoptic"][:80]
    for classes in DATASET_CLASSES.values():
        assert len(set(classes)) == len(classes) and all(name == name.strip() for name in classes)
    from modeling_eomt.labels import COCO_PANOPTIC_CATEGORIES

    ids = [category_id for category_id, _ in COCO_PANOPTIC_CATEGORIES]
    assert ids == sorted(ids) and ids[-1] == 200  # contiguous index = rank of the category id, as the authors map them

