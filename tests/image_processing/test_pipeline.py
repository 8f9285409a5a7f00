"""pipeline("image-segmentation") and the processor's post-processing on a tiny model: odd shapes, batches, windows.

References are computed independently: transformers' `EomtImageProcessorPil` post-processing where its geometry is
right (padded square inputs whose resized size it computes like the authors), and a plain re-implementation of the
authors' sliding-window inference for semantic segmentation.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import pipeline
from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

from image_processing import EoMTImageProcessor
from image_processing.transforms import normalize_image, resize_image, shortest_side_size
from modeling.helpers import perturb_, tiny_config
from modeling_eomt import EoMTForUniversalSegmentation

ODD_SIZES = [(5, 7), (20, 600), (600, 20), (64, 40)]
LABELS = {0: "sky", 1: "road", 2: "car", 3: "person"}
WINDOWS = {"shortest_edge": 32, "longest_edge": None}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(id2label=LABELS, label2id={v: k for k, v in LABELS.items()})), 0.5)
    model.set_attn_mask_probs(0.0)  # the state after mask annealing: no masked attention at inference
    return model.eval()


def save(model, processor, directory):
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return pipeline("image-segmentation", model=str(directory))


@pytest.fixture(scope="module")
def padded_pipe(model, tmp_path_factory):
    return save(model, EoMTImageProcessor(size=64, num_labels=4), tmp_path_factory.mktemp("padded"))


@pytest.fixture(scope="module")
def window_pipe(model, tmp_path_factory):
    return save(model, EoMTImageProcessor(size=WINDOWS, do_split_image=True, num_labels=4), tmp_path_factory.mktemp("windows"))


def images_of(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def segment_map(annotations, size):
    """Pipeline output -> `(H, W)` map of the index of the segment covering each pixel (-1: none); masks disjoint."""
    out = np.full(size, -1)
    for index, annotation in enumerate(annotations):
        mask = np.asarray(annotation["mask"]) > 0
        assert annotation["mask"].size == size[::-1] and not (out[mask] >= 0).any()
        out[mask] = index
    return out


def semantic_map(annotations, size):
    label_to_id = {name: index for index, name in LABELS.items()}
    out = np.full(size, -1)
    for annotation in annotations:
        assert annotation["score"] is None
        out[np.asarray(annotation["mask"]) > 0] = label_to_id[annotation["label"]]
    assert (out >= 0).all()  # every pixel has a class
    return out


def reference_sliding_window_semantic(model, image: Image.Image, window: int) -> np.ndarray:
    """The authors' sliding-window inference written out: shortest side to `window`, evenly overlapping windows,
    per-class scores averaged where windows overlap, resized to the image, argmax."""
    height, width = image.height, image.width
    new_h, new_w = shortest_side_size(height, width, window)
    resized = normalize_image(np.asarray(image.resize((new_w, new_h), Image.BILINEAR)))
    long_side = max(new_h, new_w)
    count = -(-long_side // window)
    overlap = (count * window - long_side) / (count - 1) if count > 1 else 0
    starts = [int(j * (window - overlap)) for j in range(count)]
    crops = [resized[:, s : s + window] if new_h > new_w else resized[:, :, s : s + window] for s in starts]
    with torch.no_grad():
        outputs = model(torch.stack(crops))
    masks = F.interpolate(outputs.masks_queries_logits, size=(window, window), mode="bilinear").sigmoid()
    scores = torch.einsum("bqk,bqhw->bkhw", outputs.class_queries_logits.softmax(-1)[..., :-1], masks)
    total, hits = torch.zeros(scores.shape[1], new_h, new_w), torch.zeros(1, new_h, new_w)
    for start, crop_scores in zip(starts, scores):
        region = (slice(None), slice(start, start + window)) if new_h > new_w else (slice(None), slice(None), slice(start, start + window))
        total[region] += crop_scores
        hits[region] += 1
    merged = F.interpolate((total / hits)[None], size=(height, width), mode="bilinear")[0]
    return merged.argmax(0).numpy()


def reference_padded_semantic(model, image: Image.Image, side: int) -> np.ndarray:
    """Inference without windows: longest side to `side`, zero padding, per-class scores of the unpadded region
    resized to the image, argmax."""
    scale = side / max(image.height, image.width)
    new_h, new_w = max(1, round(image.height * scale)), max(1, round(image.width * scale))
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[:new_h, :new_w] = np.asarray(image.resize((new_w, new_h), Image.BILINEAR))
    with torch.no_grad():
        outputs = model(normalize_image(pixels)[None])
    masks = F.interpolate(outputs.masks_queries_logits, size=(side, side), mode="bilinear")[..., :new_h, :new_w]
    scores = torch.einsum("bqk,bqhw->bkhw", outputs.class_queries_logits.softmax(-1)[..., :-1], masks.sigmoid())
    return F.interpolate(scores, size=(image.height, image.width), mode="bilinear")[0].argmax(0).numpy()


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtask", ["panoptic", "instance", "semantic"])
def test_pipeline_odd_shapes_batched_equals_single(padded_pipe, subtask):
    images = images_of(ODD_SIZES)
    kwargs = {"subtask": subtask} if subtask == "semantic" else {"subtask": subtask, "threshold": 0.3}
    batched = padded_pipe(images, batch_size=2, **kwargs)
    single = [padded_pipe(image, **kwargs) for image in images]
    for image, many, one in zip(images, batched, single):
        assert len(many) >= 1 and [a["label"] for a in many] == [a["label"] for a in one]
        assert all(a["label"] in LABELS.values() for a in many)
        for a, b in zip(many, one):
            assert a["mask"].size == image.size and np.array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
            assert a["score"] == pytest.approx(b["score"], abs=1e-5) if a["score"] is not None else b["score"] is None
        if subtask != "instance":  # panoptic and semantic segments never overlap
            segment_map(many, (image.height, image.width))


@pytest.mark.parametrize("subtask", ["panoptic", "instance"])
def test_pipeline_matches_transformers_post_processing_where_its_geometry_is_right(padded_pipe, model, subtask):
    images = images_of([(32, 64), (64, 16), (48, 64)], seed=1)
    theirs_processor = EomtImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    ours = padded_pipe(images, batch_size=3, subtask=subtask, threshold=0.3)
    for image, annotations in zip(images, ours):
        inputs = theirs_processor(image, return_tensors="pt")
        with torch.no_grad():
            outputs = model(inputs.pixel_values)
        target = [(image.height, image.width)]
        if subtask == "panoptic":
            result = theirs_processor.post_process_panoptic_segmentation(
                outputs, target, threshold=0.3, mask_threshold=0.5, overlap_mask_area_threshold=0.5
            )[0]
            assert np.array_equal(segment_map(annotations, target[0]), result["segmentation"].numpy())
        else:
            result = theirs_processor.post_process_instance_segmentation(outputs, target, threshold=0.3)[0]
            last_instance = result["segmentation"].numpy()
            for index, annotation in enumerate(annotations):  # each instance mask is where it is not painted over
                assert (np.asarray(annotation["mask"])[last_instance == index] > 0).all()
        assert [LABELS[s["label_id"]] for s in result["segments_info"]] == [a["label"] for a in annotations]
        assert [s["score"] for s in result["segments_info"]] == pytest.approx([a["score"] for a in annotations], abs=1e-5)


def test_processor_stuff_classes_fuse_panoptic_segments_in_the_pipeline(padded_pipe):
    image = images_of([(48, 64)], seed=5)[0]
    settings = {"threshold": 0.0, "overlap_mask_area_threshold": 0.0}
    plain = padded_pipe(image, **settings)
    padded_pipe.image_processor.stuff_classes = [1, 2]
    try:
        fused = padded_pipe(image, **settings)
    finally:
        padded_pipe.image_processor.stuff_classes = None
    plain_labels, fused_labels = [a["label"] for a in plain], [a["label"] for a in fused]
    assert plain_labels.count("road") + plain_labels.count("car") > 2  # several segments per stuff class before
    assert fused_labels.count("road") == 1 and fused_labels.count("car") == 1
    for name in ("road", "car"):  # fusing changes segment ids, not pixels
        union = np.any([np.asarray(a["mask"]) > 0 for a in plain if a["label"] == name], axis=0)
        assert np.array_equal(union, np.asarray(next(a["mask"] for a in fused if a["label"] == name)) > 0)


def test_pipeline_semantic_removes_the_padding(padded_pipe, model):
    # transformers' semantic post-processing keeps the padding (it resizes the whole square input to the image).
    # 20x600 at 64 leaves a valid region 2 pixels high (aten's same-size shortcut once broke it).
    for image in images_of([(5, 7), (20, 600), (600, 20), (40, 600), (64, 40)], seed=4):
        expected = reference_padded_semantic(model, image, 64)
        assert np.array_equal(semantic_map(padded_pipe(image, subtask="semantic"), (image.height, image.width)), expected)


def test_pipeline_sliding_windows_match_the_authors_inference(window_pipe, model):
    for image in images_of([(20, 150), (70, 33), (5, 7), (40, 40)], seed=2):
        annotations = window_pipe(image, subtask="semantic")
        expected = reference_sliding_window_semantic(model, image, 32)
        assert np.array_equal(semantic_map(annotations, (image.height, image.width)), expected)


def test_pipeline_refuses_what_it_cannot_do(window_pipe, padded_pipe, tmp_path, model):
    images = images_of([(20, 70), (30, 30)])
    with pytest.raises(ValueError, match=r"the image-segmentation pipeline cannot batch sliding windows \(use batch_size=1\)"):
        window_pipe(images, subtask="semantic", batch_size=2)
    with pytest.raises(ValueError, match="panoptic segmentation needs whole images.*subtask='semantic'"):
        window_pipe(images[0])  # the pipeline tries panoptic first
    mismatched = save(model, EoMTImageProcessor(size=64, num_labels=6), tmp_path)
    with pytest.raises(ValueError, match=r"the outputs have 4 classes \(\+ no object\) but the processor was set up for num_labels=6"):
        mismatched(images[0])


# ---------------------------------------------------------------------------------------------------------------------
# Post-processing methods called directly
# ---------------------------------------------------------------------------------------------------------------------


def run(model, processor, images):
    inputs = processor(images)
    with torch.no_grad():
        outputs = model(inputs.pixel_values, patch_offsets=inputs.get("patch_offsets"))
    return inputs, outputs


def test_semantic_windows_batch_and_scores_match_transformers(model):
    images = images_of([(48, 96), (96, 48), (32, 32)], seed=3)  # sizes where transformers resizes like the authors
    ours_processor = EoMTImageProcessor(size=WINDOWS, do_split_image=True)
    theirs_processor = EomtImageProcessorPil(size=WINDOWS, do_split_image=True)
    inputs, outputs = run(model, ours_processor, images)
    targets = [(image.height, image.width) for image in images]
    ours = ours_processor.post_process_semantic_segmentation(outputs, targets, return_segmentation_scores=True)
    theirs = theirs_processor.post_process_semantic_segmentation(outputs, targets, return_segmentation_scores=True)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.segmentation, b.segmentation)
        torch.testing.assert_close(a.segmentation_scores, b.segmentation_scores, atol=1e-5, rtol=1e-5)


def test_original_sizes_allow_any_target_size(model):
    processor = EoMTImageProcessor(size=64)
    image = images_of([(30, 80)])[0]
    inputs, outputs = run(model, processor, image)
    resized = tuple(inputs.resized_sizes[0].tolist())  # (24, 64)
    at_resized = processor.post_process_semantic_segmentation(outputs, [resized], original_sizes=inputs.original_sizes)[0]
    logits = F.interpolate(outputs.masks_queries_logits, size=(64, 64), mode="bilinear")[..., : resized[0], : resized[1]]
    expected = torch.einsum("bqk,bqhw->bkhw", outputs.class_queries_logits.softmax(-1)[..., :-1], logits.sigmoid())[0].argmax(0)
    assert torch.equal(at_resized, expected)


def test_post_processing_bad_input(model):
    processor = EoMTImageProcessor(size=64)
    inputs, outputs = run(model, processor, images_of([(30, 40), (40, 30)]))
    with pytest.raises(ValueError, match=r"target_sizes needs one \(height, width\) per image \(2\), got 1 entries"):
        processor.post_process_panoptic_segmentation(outputs, [(30, 40)])
    with pytest.raises(ValueError, match="target_sizes is required"):
        processor.post_process_instance_segmentation(outputs, None)
    with pytest.raises(ValueError, match=r"mask logits of 16x16 cannot come from a 30x40 input"):
        EoMTImageProcessor(size=40, do_pad=False).post_process_semantic_segmentation(outputs, [(30, 40), (30, 40)])
    with pytest.raises(ValueError, match=r"stuff_classes contains \[9\]"):
        processor.post_process_panoptic_segmentation(outputs, [(30, 40), (40, 30)], threshold=0.0, stuff_classes=[9])
