"""Bad input: every problem of a data set is reported before training, naming its file; decoding errors name the
file too (also from DataLoader workers); nothing is skipped silently."""

import json
import shutil
import traceback

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from image_processing.targets import id_to_rgb
from training.data import (
    DatasetValidationError,
    SampleError,
    load_ade20k,
    load_coco_instance,
    load_coco_panoptic,
    make_train_dataset,
    validate_dataset,
)
from training.data.synthetic import write_synthetic_ade20k, write_synthetic_coco_instance, write_synthetic_coco_panoptic


@pytest.fixture
def panoptic_root(tmp_path):
    return write_synthetic_coco_panoptic(tmp_path / "coco", 4, 0, size=32, seed=1)


def _edit_json(path, edit):
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def _problems(source, **kwargs):
    with pytest.raises(DatasetValidationError) as raised:
        validate_dataset(source, progress=False, **kwargs)
    return raised.value.report.problems, str(raised.value)


def test_clean_data_set_passes(panoptic_root):
    report = validate_dataset(load_coco_panoptic(panoptic_root, "train"), decode=True, progress=False)
    assert report.problems == [] and report.num_records == 4 and report.num_files == 8 and report.decoded == 4


def test_missing_image_and_missing_png(panoptic_root):
    (panoptic_root / "train2017" / "000000000002.jpg").unlink()
    (panoptic_root / "annotations" / "panoptic_train2017" / "000000000003.png").unlink()
    problems, _ = _problems(load_coco_panoptic(panoptic_root, "train"))
    assert any("000000000002.jpg: missing image file" in p for p in problems)
    assert any("000000000003.png: missing annotation file" in p for p in problems)
    assert len(problems) == 2


def test_annotation_for_an_unknown_image_and_unknown_category(panoptic_root):
    json_path = panoptic_root / "annotations" / "panoptic_train2017.json"

    def edit(document):
        document["annotations"][0]["image_id"] = 999
        document["annotations"][1]["segments_info"][0]["category_id"] = 5  # not a category (ids 1, 2, 4, 7, 12, ...)

    _edit_json(json_path, edit)
    source = load_coco_panoptic(panoptic_root, "train")
    problems, message = _problems(source)
    assert any(str(json_path) in p and "image_id 999" in p and "000000000001.png" in p for p in problems)
    assert any("000000000002.png" in p and "category_id 5" in p for p in problems)
    with pytest.raises(SampleError, match=r"000000000002\.png.*category_id 5"):  # and again when training reads it
        source[1]


@pytest.mark.parametrize("decode", [False, True])
def test_png_ids_not_in_segments_info_are_found_in_every_record(panoptic_root, decode):
    png = panoptic_root / "annotations" / "panoptic_train2017" / "000000000004.png"  # the last record
    ids = np.zeros((32, 32), np.int64)
    ids[:4, :4] = 123456
    Image.fromarray(id_to_rgb(ids)).save(png)
    source = load_coco_panoptic(panoptic_root, "train")
    problems, _ = _problems(source, decode=decode)  # the headers are fine: the PNG must be read
    assert (
        len(problems) == 1
        and "000000000004.png" in problems[0]
        and "[123456]" in problems[0]
        and "segments_info" in problems[0]
    )


def test_corrupt_and_truncated_images(panoptic_root):
    corrupt = panoptic_root / "train2017" / "000000000001.jpg"
    corrupt.write_bytes(b"this is not a JPEG")
    truncated = panoptic_root / "train2017" / "000000000003.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-200])  # header intact, pixel data cut
    source = load_coco_panoptic(panoptic_root, "train")
    for decode in (False, True):
        problems, _ = _problems(source, decode=decode)
        assert problems[0] == f"{corrupt}: not a readable image (image file corrupt or of an unknown format)"
        assert len(problems) == 2 and str(truncated) in problems[1] and "truncated" in problems[1]


def test_size_disagreements(panoptic_root):
    Image.new("RGB", (30, 32)).save(panoptic_root / "train2017" / "000000000002.jpg")
    problems, _ = _problems(load_coco_panoptic(panoptic_root, "train"))
    assert problems == [f"{panoptic_root / 'train2017' / '000000000002.jpg'}: is 32x30 but the annotations say 32x32"]


def test_many_problems_are_counted_and_the_first_reported(panoptic_root):
    shutil.rmtree(panoptic_root / "train2017")
    (panoptic_root / "train2017").mkdir()
    problems, message = _problems(load_coco_panoptic(panoptic_root, "train"), max_reported=2)
    assert len(problems) == 4
    assert (
        "4 problem(s) in 4 records" in message and "... and 2 more" in message and message.count("missing image") == 2
    )


def test_instance_and_semantic_problems(tmp_path):
    root = write_synthetic_coco_instance(tmp_path / "inst", 3, 0, size=32, seed=2)
    json_path = root / "annotations" / "instances_train2017.json"
    _edit_json(json_path, lambda d: d["annotations"].append({**d["annotations"][0], "id": 99, "image_id": 77}))
    problems, _ = _problems(load_coco_instance(root, "train"))
    assert problems == [f"{json_path}: annotation 99 has image_id 77, which is not in 'images'"]

    ade = write_synthetic_ade20k(tmp_path / "ade", 3, 0, size=32, seed=2)
    (ade / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    problems, _ = _problems(load_ade20k(ade, "train"))
    assert problems == [f"{ade / 'annotations' / 'training' / 'ADE_train_00000002.png'}: missing annotation file"]


def test_training_errors_name_the_file_in_worker_processes(panoptic_root):
    dataset = make_train_dataset(panoptic_root, "train", input_size=32)  # validated and clean
    (panoptic_root / "train2017" / "000000000002.jpg").write_bytes(b"garbage")
    batches = iter(DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=list))
    with pytest.raises(SampleError, match=r"000000000002\.jpg.*cannot identify image file") as raised:
        list(batches)
    # free the iterator now (its workers stop at once) instead of in a later garbage collection, where stopping
    # them waits for a 5 s timeout: the traceback's frames hold it in a reference cycle
    traceback.clear_frames(raised.tb)
    del batches
    with pytest.raises(DatasetValidationError, match=r"000000000002\.jpg"):
        make_train_dataset(panoptic_root, "train", input_size=32)


def test_images_without_annotation_are_reported_as_left_out(panoptic_root, caplog):
    _edit_json(panoptic_root / "annotations" / "panoptic_train2017.json", lambda d: d["annotations"].pop())
    source = load_coco_panoptic(panoptic_root, "train")
    assert len(source) == 3 and "1 images have no annotation" in caplog.text
    report = validate_dataset(source, progress=False)
    assert report.problems == [] and "000000000004.jpg" in report.warnings[0]


def test_images_without_trainable_segments_are_left_out_of_training_with_a_warning(panoptic_root, caplog):
    _edit_json(panoptic_root / "annotations" / "panoptic_train2017.json",
               lambda d: [s.update(iscrowd=1) for s in d["annotations"][0]["segments_info"]])  # fmt: skip
    dataset = make_train_dataset(panoptic_root, "train", input_size=32)
    assert len(dataset) == 3 and "1 of 4 images have no non-crowd segment" in caplog.text


def _files_named(problems):
    return sorted(problem.split(": ")[0] for problem in problems)


def test_the_default_pass_finds_everything_the_full_check_finds(tmp_path):
    """Every kind of broken file, each past the first records: the default pass (images streamed through the decoder)
    and the full check (`decode=True`) name the same files."""
    root = write_synthetic_coco_panoptic(tmp_path / "coco", 8, 0, size=32, seed=3)
    images, pngs = root / "train2017", root / "annotations" / "panoptic_train2017"
    truncated = images / "000000000004.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-300])
    (pngs / "000000000005.png").write_bytes((pngs / "000000000005.png").read_bytes()[:-40])
    ids = np.zeros((32, 32), np.int64)
    ids[:4] = 777
    Image.fromarray(id_to_rgb(ids)).save(pngs / "000000000006.png")
    garbage = images / "000000000007.jpg"
    garbage.write_bytes(garbage.read_bytes()[:200] + bytes(range(256)) * 4)  # header intact, entropy data corrupt

    ade = write_synthetic_ade20k(tmp_path / "ade", 6, 0, size=32, seed=3)
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(ade / "annotations" / "training" / "ADE_train_00000005.png")
    for source in (load_coco_panoptic(root, "train"), load_ade20k(ade, "train")):
        fast = validate_dataset(source, progress=False, raise_on_problems=False)
        full = validate_dataset(source, decode=True, progress=False, raise_on_problems=False)
        assert _files_named(fast.problems) == _files_named(full.problems)
        assert fast.decoded == full.decoded == len(source)
    assert len(full.problems) == 1 and "[200]" in full.problems[0]
    coco = validate_dataset(load_coco_panoptic(root, "train"), progress=False, raise_on_problems=False)
    assert len(coco.problems) == 4 and any("[777]" in problem for problem in coco.problems)
    assert any(str(truncated) in problem and "truncated" in problem for problem in coco.problems)


def test_segments_without_pixels_are_warnings(panoptic_root, caplog):
    document = json.loads((panoptic_root / "annotations" / "panoptic_train2017.json").read_text())
    document["annotations"][0]["segments_info"].append({"id": 999999, "category_id": 1, "iscrowd": 0})
    (panoptic_root / "annotations" / "panoptic_train2017.json").write_text(json.dumps(document))
    report = validate_dataset(load_coco_panoptic(panoptic_root, "train"), progress=False)
    assert report.problems == []
    assert report.warnings == [f"{panoptic_root / 'annotations' / 'panoptic_train2017' / '000000000001.png'}: segments "
                               "[999999] of segments_info have no pixels in the PNG (left out)"]  # fmt: skip
    assert "1 record(s) read with notes" in caplog.text
