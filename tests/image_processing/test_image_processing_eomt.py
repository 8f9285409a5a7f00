"""EoMTImageProcessor: geometry, parity with transformers' EomtImageProcessorPil, targets, save/load, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

import modeling_eomt  # noqa: F401  (registers EoMTImageProcessor with AutoImageProcessor)
from image_processing import EoMTImageProcessor
from image_processing.targets import id_to_rgb
from image_processing.transforms import normalize_image, resize_image, resize_labels, sliding_windows

RNG = np.random.default_rng(0)
WINDOWS = {"shortest_edge": 32, "longest_edge": None}


def random_image(height, width):
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def block_map(height, width, values=(0, 1, 2, 3)):
    """A label map of four quadrants (values in reading order)."""
    label_map = np.empty((height, width), np.int64)
    label_map[: height // 2, : width // 2], label_map[: height // 2, width // 2 :] = values[0], values[1]
    label_map[height // 2 :, : width // 2], label_map[height // 2 :, width // 2 :] = values[2], values[3]
    return label_map


def masks_to_map(masks, labels, void=-1):
    out = np.full(masks.shape[1:], void, np.int64)
    for mask, label in zip(masks.numpy().astype(bool), labels.tolist()):
        assert not (out[mask] != void).any(), "masks overlap"
        out[mask] = label
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, resized", [((20, 600), (2, 64)), ((5, 7), (46, 64)), ((64, 40), (64, 40)), ((128, 96), (64, 48))])
def test_longest_side_resize_and_bottom_right_zero_padding(size, resized):
    image = random_image(*size)
    out = EoMTImageProcessor(size=64)(image)
    assert out.pixel_values.shape == (1, 3, 64, 64)
    assert out.original_sizes.tolist() == [list(size)] and out.resized_sizes.tolist() == [list(resized)]
    expected = normalize_image(resize_image(image, resized))
    torch.testing.assert_close(out.pixel_values[0, :, : resized[0], : resized[1]], expected)
    padding_value = normalize_image(np.zeros((1, 1, 3), np.uint8))[:, 0, 0]  # zero pixels, then normalised
    padded = torch.ones(64, 64, dtype=torch.bool)
    padded[: resized[0], : resized[1]] = False
    assert torch.equal(out.pixel_values[0][:, padded], padding_value[:, None].expand(3, int(padded.sum())))


@pytest.mark.parametrize("size, resized, offsets", [
    ((20, 600), (32, 960), [(0, 32 * i, 32 * i + 32) for i in range(30)]),
    ((100, 45), (71, 32), [(0, 0, 32), (0, 19, 51), (0, 39, 71)]),
    ((10, 10), (32, 32), [(0, 0, 32)]),
])  # fmt: skip
def test_sliding_windows_tile_the_shortest_side_resized_image(size, resized, offsets):
    image = random_image(*size)
    out = EoMTImageProcessor(size=WINDOWS, do_split_image=True)([image, image[:, ::-1]])
    assert out.resized_sizes.tolist() == [list(resized)] * 2
    assert [tuple(offset.tolist()) for offset in out.patch_offsets] == offsets + [(1, s, e) for _, s, e in offsets]
    expected = normalize_image(resize_image(image, resized))
    canvas = torch.zeros_like(expected)
    for row, (_, start, end) in zip(out.pixel_values, offsets):
        if resized[0] > resized[1]:
            canvas[:, start:end] = row
        else:
            canvas[:, :, start:end] = row
    torch.testing.assert_close(canvas, expected)


def test_sliding_windows_cover_every_pixel_and_overlap_evenly():
    assert sliding_windows(960, 32) == [(32 * i, 32 * i + 32) for i in range(30)]
    assert sliding_windows(71, 32) == [(0, 32), (19, 51), (39, 71)]
    assert sliding_windows(4481, 640)[-1] == (3841, 4481)  # the authors' float formula ends at 4480 here
    for length in range(32, 400):
        windows = sliding_windows(length, 32)
        assert windows[0][0] == 0 and windows[-1][1] == length and len(windows) == -(-length // 32)
        assert all(0 <= b[0] - a[0] <= 32 for a, b in zip(windows, windows[1:]))  # no gap between windows
    with pytest.raises(ValueError, match="cannot cover 20 pixels with windows of 32"):
        sliding_windows(20, 32)


def test_no_padding_keeps_the_resized_size_and_lists_differing_sizes():
    processor = EoMTImageProcessor(size=64, do_pad=False)
    assert processor(random_image(20, 40)).pixel_values.shape == (1, 3, 32, 64)
    rows = processor([random_image(20, 40), random_image(40, 20)], return_tensors=None).pixel_values
    assert [tuple(row.shape) for row in rows] == [(3, 32, 64), (3, 64, 32)]
    with pytest.raises(ValueError, match=r"cannot stack images of different sizes \[\(32, 64\), \(64, 32\)\]"):
        processor([random_image(20, 40), random_image(40, 20)])


def test_rescale_normalize_and_resample_settings():
    image = random_image(8, 8)
    raw = EoMTImageProcessor(size=8, do_rescale=False, do_normalize=False)(image).pixel_values[0]
    assert torch.equal(raw, torch.from_numpy(image).permute(2, 0, 1).float())
    scaled = EoMTImageProcessor(size=8, do_normalize=False)(image).pixel_values[0]
    torch.testing.assert_close(scaled, raw / 255)
    nearest = EoMTImageProcessor(size=16, resample=Image.NEAREST, do_rescale=False, do_normalize=False)(image).pixel_values[0]
    assert torch.equal(nearest[:, ::2, ::2], raw)  # 2x nearest upsampling repeats pixels
    with pytest.raises(ValueError, match="resample must be PIL nearest"):
        EoMTImageProcessor(resample=Image.LANCZOS)


def test_every_input_kind_gives_the_same_pixel_values(tmp_path):
    image = random_image(20, 30)
    Image.fromarray(image).save(tmp_path / "image.png")
    processor = EoMTImageProcessor(size=32)
    reference = processor(Image.fromarray(image)).pixel_values
    for same in [image, image.transpose(2, 0, 1), torch.from_numpy(image).permute(2, 0, 1), str(tmp_path / "image.png")]:
        torch.testing.assert_close(processor(same).pixel_values, reference)
    torch.testing.assert_close(processor(image.astype(np.float32) / 255).pixel_values, reference, atol=0.05, rtol=0)
    batch = processor(np.stack([image, image]))
    assert batch.pixel_values.shape == (2, 3, 32, 32)


# ---------------------------------------------------------------------------------------------------------------------
# Parity with transformers' EomtImageProcessorPil
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(48, 64), (64, 48), (32, 32), (100, 30), (7, 5), (20, 600)])
def test_padded_pixel_values_match_transformers(size):
    image = Image.fromarray(random_image(*size))
    theirs = EomtImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 32}, do_pad=True)(image, return_tensors="pt")
    ours = EoMTImageProcessor(size=32)(image)
    torch.testing.assert_close(ours.pixel_values, theirs.pixel_values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(48, 96), (96, 48), (32, 32), (20, 600), (64, 160)])
def test_sliding_windows_match_transformers_where_its_sizes_are_exact(size):
    image = Image.fromarray(random_image(*size))
    theirs = EomtImageProcessorPil(size=WINDOWS, do_split_image=True)(image, return_tensors="pt")
    ours = EoMTImageProcessor(size=WINDOWS, do_split_image=True)(image)
    torch.testing.assert_close(ours.pixel_values, theirs.pixel_values, atol=1e-5, rtol=0)
    assert [o.tolist() for o in ours.patch_offsets] == [o.tolist() for o in theirs.patch_offsets]


def test_window_sizes_are_rounded_like_the_authors_not_truncated():
    # 48x64 -> shorter side 32: the authors round 64 * 32 / 48 = 42.67 to 43; transformers truncates to 42.
    ours = EoMTImageProcessor(size=WINDOWS, do_split_image=True)(random_image(48, 64))
    theirs = EomtImageProcessorPil(size=WINDOWS, do_split_image=True)(Image.fromarray(random_image(48, 64)))
    assert ours.resized_sizes.tolist() == [[32, 43]] and ours.patch_offsets[-1].tolist() == [0, 11, 43]
    assert theirs.patch_offsets[-1].tolist() == [0, 10, 42]


def test_mask_labels_match_transformers_inside_the_image():
    image, label_map = random_image(48, 64), block_map(48, 64, (0, 3, 7, 255))
    theirs = EomtImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 32}, do_pad=True)(
        Image.fromarray(image), segmentation_maps=label_map, return_tensors="pt"
    )
    ours = EoMTImageProcessor(size=32, ignore_index=None)(image, segmentation_maps=label_map)
    assert ours.class_labels[0].tolist() == theirs.class_labels[0].tolist() == [0, 3, 7, 255]
    assert torch.equal(ours.mask_labels[0][:, :24], theirs.mask_labels[0][:, :24])
    # transformers pads the label map with 0, so its padding becomes class 0; ours belongs to no mask.
    assert theirs.mask_labels[0][0, 24:].all() and not ours.mask_labels[0][:, 24:].any()


# ---------------------------------------------------------------------------------------------------------------------
# Targets: encode -> masks -> back to maps, after the same geometry as the image
# ---------------------------------------------------------------------------------------------------------------------


def test_semantic_map_round_trip_after_resize_and_pad():
    label_map = block_map(45, 70, (0, 2, 255, 1))
    label_map[:3, :3] = 3
    out = EoMTImageProcessor(size=32, num_labels=4)(random_image(45, 70), segmentation_maps=Image.fromarray(label_map.astype(np.uint8)))
    masks, labels = out.mask_labels[0], out.class_labels[0]
    assert masks.shape == (4, 32, 32) and masks.dtype == torch.float32 and labels.tolist() == [0, 1, 2, 3]
    expected = resize_labels(label_map, (21, 32))
    rebuilt = masks_to_map(masks, labels, void=255)
    assert np.array_equal(rebuilt[:21], expected) and (rebuilt[21:] == 255).all()
    assert not out.is_crowd[0].any()


def test_semantic_map_round_trip_through_windows():
    label_map = block_map(40, 100, (1, 0, 2, 0))
    out = EoMTImageProcessor(size=WINDOWS, do_split_image=True)(random_image(40, 100), segmentation_maps=torch.from_numpy(label_map))
    resized = resize_labels(label_map, (32, 80))
    assert len(out.mask_labels) == len(out.patch_offsets) == 3
    for masks, labels, offset in zip(out.mask_labels, out.class_labels, out.patch_offsets):
        _, start, end = offset.tolist()
        window = resized[:, start:end]
        assert labels.tolist() == np.unique(window).tolist()  # classes absent from a window are dropped
        assert np.array_equal(masks_to_map(masks, labels), window)


def test_reduce_labels_makes_zero_void_and_shifts_classes():
    label_map = block_map(8, 8, (0, 1, 5, 255))
    out = EoMTImageProcessor(size=8, reduce_labels=True)(random_image(8, 8), segmentation_maps=label_map)
    assert out.class_labels[0].tolist() == [0, 4]
    assert np.array_equal(masks_to_map(out.mask_labels[0], out.class_labels[0]), block_map(8, 8, (-1, 0, 4, -1)))


def test_instance_map_with_instance_to_class_ids():
    instance_map = block_map(16, 24, (0, 5, 9, 5))
    out = EoMTImageProcessor(size=24, reduce_labels=True)(
        [random_image(16, 24)] * 2, segmentation_maps=[instance_map, instance_map[:, ::-1].copy()],
        instance_id_to_semantic_id=[{5: 3, 9: 1}, {5: 2, 9: 2}],
    )  # reduce_labels: instance 0 is void, classes are lowered by one
    assert out.class_labels[0].tolist() == [2, 0] and out.class_labels[1].tolist() == [1, 1]
    assert np.array_equal(out.mask_labels[0][0, :16].numpy().astype(bool), instance_map == 5)
    with pytest.raises(ValueError, match=r"segmentation_maps\[0\]: instance ids \[9\] have no entry"):
        EoMTImageProcessor(size=24)(random_image(16, 24), segmentation_maps=instance_map, instance_id_to_semantic_id={0: 0, 5: 1})


def test_panoptic_png_with_segments_info_keeps_crowd_as_information(tmp_path):
    id_map = block_map(30, 40, (0, 1001, 2002, 3003))
    Image.fromarray(id_to_rgb(id_map)).save(tmp_path / "panoptic.png")
    segments_info = [
        {"id": 1001, "category_id": 17, "iscrowd": 0},
        {"id": 2002, "category_id": 90, "iscrowd": 1},
        {"id": 3003, "category_id": 17, "iscrowd": 0},
    ]
    out = EoMTImageProcessor(size=20, num_labels=2)(
        random_image(30, 40), segmentation_maps=str(tmp_path / "panoptic.png"), segments_info=[segments_info],
        category_to_label={17: 0, 90: 1},
    )
    assert out.class_labels[0].tolist() == [0, 1, 0] and out.is_crowd[0].tolist() == [False, True, False]
    rebuilt = masks_to_map(out.mask_labels[0], torch.tensor([1001, 2002, 3003]), void=0)
    assert np.array_equal(rebuilt[:15], resize_labels(id_map, (15, 20))) and (rebuilt[15:] == 0).all()


def test_mask_targets_pass_through_the_same_geometry():
    from image_processing.targets import semantic_target

    label_map = block_map(30, 40, (0, 1, 2, 3))
    from_map = EoMTImageProcessor(size=20)(random_image(30, 40), segmentation_maps=label_map)
    from_target = EoMTImageProcessor(size=20)(random_image(30, 40), segmentation_maps=[semantic_target(label_map)])
    assert all(torch.equal(a, b) for a, b in zip(from_map.mask_labels[0], from_target.mask_labels[0]))


# ---------------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_auto_image_processor(tmp_path):
    processor = EoMTImageProcessor(size={"shortest_edge": 32, "longest_edge": None}, do_split_image=True, num_labels=7,
                                   reduce_labels=True, image_mean=(0.5, 0.5, 0.5), stuff_classes=[3, 5])
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "EoMTImageProcessor" and saved["num_labels"] == 7 and saved["stuff_classes"] == [3, 5]
    for loaded in (EoMTImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is EoMTImageProcessor and loaded.to_dict() == processor.to_dict()
    image = random_image(40, 50)
    torch.testing.assert_close(AutoImageProcessor.from_pretrained(tmp_path)(image).pixel_values, processor(image).pixel_values)
    assert EoMTImageProcessor.from_pretrained(tmp_path, do_pad=False, num_labels=3).num_labels == 3


def test_thresholds_are_saved_and_are_the_defaults_of_post_processing(tmp_path):
    EoMTImageProcessor(size=16, threshold=0.6, overlap_mask_area_threshold=0.4).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert (saved["threshold"], saved["overlap_mask_area_threshold"]) == (0.6, 0.4)
    calibrated, default = EoMTImageProcessor.from_pretrained(tmp_path), EoMTImageProcessor(size=16)
    assert (calibrated.threshold, calibrated.overlap_mask_area_threshold) == (0.6, 0.4)
    assert (default.threshold, default.overlap_mask_area_threshold) == (0.8, 0.8)
    # query 0: class 0 at 0.7 over the top half; query 1: class 1 at 0.95 over the top-left quarter, so that query 0
    # keeps half of its mask; query 2: no object
    class_logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.025, 0.95, 0.025], [0.05, 0.05, 0.9]]]))
    mask_logits = torch.full((1, 3, 4, 4), -10.0)
    mask_logits[0, 0, :2] = 10.0
    mask_logits[0, 1, :2, :2] = 10.0
    outputs = {"class_queries_logits": class_logits, "masks_queries_logits": mask_logits}

    def labels(processor, task, **kwargs):
        post_process = getattr(processor, f"post_process_{task}_segmentation")
        return sorted(segment["label_id"] for segment in post_process(outputs, target_sizes=[(16, 16)], **kwargs)[0]["segments_info"])

    assert labels(calibrated, "instance") == [0, 1] and labels(default, "instance") == [1]  # the class threshold
    assert labels(calibrated, "instance", threshold=0.8) == [1] and labels(default, "instance", threshold=0.6) == [0, 1]
    assert labels(calibrated, "panoptic") == [0, 1]  # query 0 keeps half its mask: 0.5 >= 0.4
    assert labels(default, "panoptic") == [1] and labels(default, "panoptic", threshold=0.6) == [1]  # 0.5 < 0.8
    assert labels(default, "panoptic", threshold=0.6, overlap_mask_area_threshold=0.4) == [0, 1]
    assert labels(calibrated, "panoptic", overlap_mask_area_threshold=0.8) == [1]
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\], got 1.5"):
        EoMTImageProcessor(threshold=1.5)
    with pytest.raises(ValueError, match=r"overlap_mask_area_threshold must be a number in \[0, 1\], got -0.1"):
        EoMTImageProcessor(overlap_mask_area_threshold=-0.1)


def test_loads_transformers_eomt_configs(tmp_path):
    EomtImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 32}, do_pad=True, ignore_index=255).save_pretrained(tmp_path)
    loaded = EoMTImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == {"shortest_edge": 32, "longest_edge": 32} and loaded.do_pad and not loaded.do_split_image
    assert loaded.reduce_labels and loaded.ignore_index == 255  # transformers' ignore_index reduces labels
    image = Image.fromarray(random_image(48, 64))
    theirs = EomtImageProcessorPil.from_pretrained(tmp_path)(image, return_tensors="pt").pixel_values
    torch.testing.assert_close(loaded(image).pixel_values, theirs, atol=1e-5, rtol=0)

    hub_style = {  # written by hand as on the Hub: missing keys take transformers' class defaults
        "image_processor_type": "EomtImageProcessor", "do_split_image": True, "size": {"shortest_edge": 512},
        "do_normalize": True, "resample": 2, "rescale_factor": 1 / 255,
    }  # fmt: skip
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(hub_style))
    loaded = EoMTImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == {"shortest_edge": 512, "longest_edge": None} and loaded.do_split_image
    assert not loaded.do_pad and not loaded.reduce_labels and loaded.ignore_index is None


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: clear errors naming the item and the problem
# ---------------------------------------------------------------------------------------------------------------------


def test_bad_inputs(tmp_path):
    processor = EoMTImageProcessor(size=32, num_labels=3)
    good = random_image(8, 8)
    with pytest.raises(ValueError, match="images is empty"):
        processor([])
    with pytest.raises(ValueError, match=r"images\[1\]: the image is empty \(0x8 pixels\)"):
        processor([good, np.zeros((0, 8, 3), np.uint8)])
    (tmp_path / "image.jpg").write_bytes(b"plain text")
    with pytest.raises(ValueError, match=r"images\[0\]: cannot read '.*image\.jpg' as an image"):
        processor(str(tmp_path / "image.jpg"))
    with pytest.raises(ValueError, match="got 1 segmentation_maps for 2 images"):
        processor([good, good], segmentation_maps=[np.zeros((8, 8), np.int64)])
    with pytest.raises(ValueError, match=r"segmentation_maps\[0\]: class ids \[3, 4\] are outside \[0, 3\)"):
        processor(good, segmentation_maps=block_map(8, 8, (0, 3, 4, 255)))
    with pytest.raises(ValueError, match=r"segmentation_maps\[0\] is 8x9 but images\[0\] is 8x8"):
        processor(good, segmentation_maps=np.zeros((8, 9), np.int64))
    with pytest.raises(ValueError, match=r"segmentation_maps\[0\]: segment ids \[7\] in the PNG are not in segments_info"):
        processor(good, segmentation_maps=id_to_rgb(np.full((8, 8), 7)), segments_info=[[{"id": 6, "category_id": 0}]])
    with pytest.raises(ValueError, match=r"segments_info has 1 entries for 2 images \(one per image\)"):
        processor([good, good], segmentation_maps=[np.zeros((8, 8), np.int64)] * 2, segments_info=[{"id": 1, "category_id": 0}])
    with pytest.raises(ValueError, match=r"segmentation_maps\[0\]: expected a label map \(H, W\), got shape \(8, 8, 3\)"):
        processor(good, segmentation_maps=good)
    with pytest.raises(TypeError, match=r"unexpected arguments \['do_flip'\]"):
        processor(good, do_flip=True)
    with pytest.raises(ValueError, match=r"images\[0\]: 40x40 does not fit the 32x32 input"):
        processor(random_image(40, 40), do_resize=False)
    with pytest.raises(ValueError, match="size must be an int or a dict with 'shortest_edge'"):
        EoMTImageProcessor(size={"height": 32, "width": 32})


def test_image_processing_never_imports_the_model_package():
    # modeling_eomt registers EoMTImageProcessor with AutoImageProcessor; the reverse import would be a cycle.
    import ast
    import pathlib

    import image_processing

    for path in pathlib.Path(image_processing.__file__).parent.rglob("*.py"):  # post_processing/ included
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(name.split(".")[0] in ("modeling_eomt", "training") for name in names), path.name
