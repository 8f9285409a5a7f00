"""Hostile inputs of `EoMTImageProcessor` and the `image-segmentation` pipeline: a `ValueError` naming the argument
(or the image) and what it expects, never a deep stack trace or a silently accepted value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_processing import EoMTImageProcessor
from tests.robustness.cases import Case, as_params, check_case, truncate
from tests.training.helpers import tiny_segmentation_model

IMAGE = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)


def processor():
    return EoMTImageProcessor(size=32, num_labels=4)


def outputs():
    """Outputs of a tiny model (4 classes) for one 40x30 image."""
    with torch.no_grad():
        return tiny_segmentation_model(image_size=32).eval()(**processor()(images=IMAGE, return_tensors="pt"))


def post_process(kind: str, **options):
    method = f"post_process_{kind}_segmentation"
    return lambda c: lambda: getattr(processor(), method)(outputs(), **{"target_sizes": [(40, 30)], **options})


def preprocess(images, **options):
    return lambda c: lambda: processor()(images=images, **options)


def segmenter(c):
    from transformers import pipeline

    import modeling_eomt  # noqa: F401 (registers EoMT)

    folder = c.dir / "model"
    tiny_segmentation_model(image_size=32).save_pretrained(folder)
    processor().save_pretrained(folder)
    return pipeline("image-segmentation", model=str(folder))


def image_file(c, name: str = "image.png") -> str:
    path = c.dir / name
    Image.fromarray(IMAGE).save(path)
    return str(path)


def pipe(**options):
    """The pipeline on an image file, with `options`."""

    def build(c):
        segment, image = segmenter(c), image_file(c)
        return lambda: segment(image, **options)

    return build


def truncated_file(c):
    return str(truncate(Path(image_file(c, "image.jpg")), 0.5))


PROCESSOR = [
    Case("processor", "instance mask_threshold 5", post_process("instance", mask_threshold=5),
         expect=["mask_threshold must be a number in [0, 1], got 5"]),  # was accepted and ignored
    Case("processor", "instance overlap_mask_area_threshold -1", post_process("instance", overlap_mask_area_threshold=-1),
         expect=["overlap_mask_area_threshold must be a number in [0, 1], got -1"]),
    Case("processor", "instance threshold 1.5", post_process("instance", threshold=1.5),
         expect=["threshold must be a number in [0, 1], got 1.5"]),
    Case("processor", "panoptic threshold -0.2", post_process("panoptic", threshold=-0.2),
         expect=["threshold must be a number in [0, 1], got -0.2"]),
    Case("processor", "panoptic mask_threshold NaN", post_process("panoptic", mask_threshold=float("nan")),
         expect=["mask_threshold must be a number in [0, 1], got nan"]),
    Case("processor", "panoptic overlap threshold 2", post_process("panoptic", overlap_mask_area_threshold=2),
         expect=["overlap_mask_area_threshold must be a number in [0, 1], got 2"]),
    Case("processor", "panoptic fuses an unknown class", post_process("panoptic", label_ids_to_fuse=[99]),
         expect=["label_ids_to_fuse contains [99], outside the 4 classes"]),
    Case("processor", "semantic with two target sizes for one image",
         post_process("semantic", target_sizes=[(40, 30), (3, 3)]), expect=["target_sizes has 2 entries"]),
    Case("processor", "size 0", lambda c: lambda: EoMTImageProcessor(size=0), expect=["size must give positive edges, "
         "got 0"]),
    Case("processor", "negative size", lambda c: lambda: EoMTImageProcessor(size={"shortest_edge": -32}),
         expect=["size must give positive edges"]),
    Case("processor", "float image in 0-255", preprocess(IMAGE.astype(np.float32)),
         expect=["images[0]: floating-point images must be in [0, 1]"]),
    Case("processor", "NaN image", preprocess(np.full((8, 8, 3), np.nan, np.float32)),
         expect=["images[0]: the image contains NaN or infinite values"]),
    Case("processor", "empty image", preprocess(np.zeros((0, 8, 3), np.uint8)), expect=["images[0]: the image is empty"]),
    Case("processor", "5-D array", preprocess(np.zeros((1, 1, 8, 8, 3), np.uint8)),
         expect=["images[0]: an image must have 2 or 3 dimensions"]),
    Case("processor", "no images", preprocess([]), expect=["images is empty"]),
    Case("processor", "missing image file", lambda c: preprocess(str(c.dir / "missing.png"))(c),
         expect=["images[0]: no image file at", "missing.png"]),
    Case("processor", "truncated image file", lambda c: preprocess(truncated_file(c))(c),
         expect=["images[0]: cannot read", "{dir}/image.jpg", "truncated"]),
    Case("processor", "label map of another size", preprocess(IMAGE, segmentation_maps=np.zeros((8, 8), np.int64)),
         expect=["segmentation_maps[0] is 8x8 but images[0] is 40x30"]),
    Case("processor", "class id out of range", preprocess(IMAGE, segmentation_maps=np.full((40, 30), 9, np.int64)),
         expect=["segmentation_maps[0]: class ids [9] are outside [0, 4)"]),
]  # fmt: skip

PIPELINE = [
    Case("pipeline", "threshold 1.5", pipe(threshold=1.5), expect=["threshold must be a number in [0, 1], got 1.5"]),
    Case("pipeline", "instance mask_threshold 3", pipe(subtask="instance", mask_threshold=3),
         expect=["mask_threshold must be a number in [0, 1], got 3"]),  # was accepted and ignored
    Case("pipeline", "overlap threshold -0.5", pipe(overlap_mask_area_threshold=-0.5),
         expect=["overlap_mask_area_threshold must be a number in [0, 1], got -0.5"]),
    Case("pipeline", "unknown subtask", pipe(subtask="depth"), expect=["Subtask depth is not supported"]),
]  # fmt: skip


@pytest.mark.parametrize("case", as_params(PROCESSOR + PIPELINE))
def test_hostile_processing(case, workspace, tmp_path, capsys, caplog):
    check_case(case, workspace, tmp_path, capsys, caplog)
