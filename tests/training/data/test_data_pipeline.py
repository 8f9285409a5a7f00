"""Evaluation examples per task, the factories' recipe defaults, pickling and worker processes."""

import pickle

import datasets
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.training.data_helpers import synthetic_ade, synthetic_instance, synthetic_panoptic  # noqa: F401 (fixtures)
from training.data import (
    StreamingDataset,
    collate_eval,
    from_hf_dataset,
    load_ade20k,
    make_eval_dataset,
    make_train_dataset,
)
from training.data.synthetic import CLASS_NAMES


def test_panoptic_eval_examples_at_original_resolution(synthetic_panoptic):
    root, scenes = synthetic_panoptic
    dataset = make_eval_dataset(root, "val")
    for example, scene in zip(dataset, scenes):
        assert example["image"].shape == (48, 48, 3) and example["image"].dtype == np.uint8
        segmentation, segments = example["segmentation"], example["segments_info"]
        assert segmentation.shape == (48, 48) and segmentation.dtype == np.int32
        np.testing.assert_array_equal(segmentation == 0, scene.segment_map == 0)  # void stays void
        by_id = {s["id"]: s for s in segments}
        assert set(np.unique(segmentation)) - {0} == set(by_id)
        for source_segment in scene.segments:  # each generated segment is one evaluation segment, same class/crowd
            ids = np.unique(segmentation[scene.segment_map == source_segment["id"]])
            assert len(ids) == 1
            segment = by_id[int(ids[0])]
            assert segment["label_id"] == source_segment["category_id"]
            assert segment["iscrowd"] == bool(source_segment["iscrowd"])
            assert segment["isthing"] == source_segment["isthing"]


def test_semantic_and_instance_eval_examples(synthetic_ade, synthetic_instance):
    root, scenes = synthetic_ade
    dataset = make_eval_dataset(load_ade20k(root, "val", id2label=dict(enumerate(CLASS_NAMES))))
    example = dataset[0]
    np.testing.assert_array_equal(
        example["semantic_map"], np.where(scenes[0].semantic_map < 0, 255, scenes[0].semantic_map)
    )
    instance = make_eval_dataset(synthetic_instance[0], "val")[0]
    assert set(instance) == {"image", "image_id", "file_name", "target"}
    assert instance["target"].masks.shape[1:] == (48, 48) and instance["image_id"] == 1


def test_eval_batches_from_worker_processes(synthetic_panoptic):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    restored = pickle.loads(pickle.dumps(dataset))
    batches = list(DataLoader(restored, batch_size=3, num_workers=2, collate_fn=collate_eval))
    assert [len(b["image"]) for b in batches] == [3, 1]
    assert [i for b in batches for i in b["image_id"]] == [1, 2, 3, 4]
    np.testing.assert_array_equal(batches[1]["segmentation"][0], dataset[3]["segmentation"])


def test_factories_use_the_authors_recipe_per_task(synthetic_panoptic, synthetic_ade):
    panoptic = make_train_dataset(synthetic_panoptic[0], input_size=32)
    assert panoptic.augmentation.scale_range == (0.1, 2.0) and not panoptic.augmentation.color_jitter
    assert panoptic.augmentation.input_size == (32, 32) and panoptic.info.task == "panoptic"
    semantic = make_train_dataset(synthetic_ade[0], input_size=32)
    assert semantic.augmentation.scale_range == (0.5, 2.0) and semantic.augmentation.color_jitter
    example = semantic[0]
    assert example["mask_labels"].shape[1:] == (32, 32) and example["class_labels"].max() < 150


def test_streamed_hub_data_set_same_examples_with_workers():
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 3, (4, 5)).repeat(6, 0).repeat(6, 1) for _ in range(6)]  # 24x30 semantic maps, classes 0..2
    images = [Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)) for _ in range(6)]
    table = datasets.Dataset.from_dict({"image": images, "label": [Image.fromarray(m.astype(np.uint8)) for m in maps]})
    stream = table.to_iterable_dataset(num_shards=2)
    source = from_hf_dataset(stream, "semantic", annotation_column="label", id2label={0: "a", 1: "b", 2: "c"})
    dataset = make_train_dataset(source, input_size=16, seed=3)
    assert isinstance(dataset, StreamingDataset)

    def examples(workers):
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
        return sorted(
            (e["pixel_values"].sum().item(), e["pixel_values"], e["mask_labels"], e["class_labels"]) for e in loader
        )

    single, parallel = examples(0), examples(2)
    assert len(single) == len(parallel) == 6
    for a, b in zip(single, parallel):
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    dataset.set_epoch(1)
    assert [e[0] for e in examples(0)] != [e[0] for e in single]

    evaluation = list(make_eval_dataset(source))
    np.testing.assert_array_equal(evaluation[2]["semantic_map"], maps[2])
