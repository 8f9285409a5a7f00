"""`training.prediction_store`: who segments which image, names for images that share one, records cut short by a
kill, the merge into `predictions.json`, and the run manifest (`eomt predict` uses them in
`tests/training/commands/test_predict.py` and `tests/training/commands/test_predict_sharded.py`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.prediction_store import (
    MANIFEST_FILE,
    NameClaims,
    NameIndex,
    OutputConflictError,
    RecordWriter,
    base_name,
    hash64,
    iter_record_keys,
    manifest_differences,
    merge_records,
    owner,
    prepare_output,
    record_key,
    record_line,
    write_atomically,
)

ROOT = Path(__file__).resolve().parents[2]


def test_hash_is_the_same_in_every_process_and_shares_names_out_evenly():
    script = "from training.prediction_store import hash64; print(hash64('000000000139'))"
    for seed in ("1", "2"):  # unlike hash(), not salted per process
        output = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed},
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert int(output) == hash64("000000000139")
    counts = np.bincount([owner(f"{index:012d}", 4) for index in range(4000)], minlength=4)
    assert counts.min() > 900  # about 1000 each
    assert [owner(name, 3) for name in ("x", "x~2", "x~2~3")] == [owner("x", 3)] * 3  # one owner per base name
    assert base_name("a~b~2") == "a~b" and base_name("frame-0002") == "frame-0002"


def test_name_index_keeps_the_first_value_across_merges():
    index = NameIndex(merge_every=4)
    keys = [hash64(str(key)) for key in range(11)]
    for value, key in enumerate(keys):
        index.add(key, value)
    index.add(keys[0], 99)  # already there: kept
    assert len(index) == 11 and [index.get(key) for key in keys] == list(range(11))
    assert index.get(hash64("absent")) is None


def test_claims_give_distinct_names_and_recognise_images_done(tmp_path):
    claims = NameClaims(rank=0, world_size=1)
    assert claims.claim("1", "/x/1.png") == ("1", True)
    assert claims.claim("1", "/y/1.png") == ("1~2", True)  # same name, another image
    assert claims.claim("1~2", "/z/1~2.png") == ("1~2~2", True)  # a file really named 1~2
    assert claims.claim("1", "/y/1.png") == ("1~2", False)  # the same image again: done
    writer = RecordWriter(tmp_path, rank=0)
    writer.write("1", "/x/1.png", {})
    writer.write("1~2", "/y/1.png", {})
    writer.close()
    resumed = NameClaims(rank=0, world_size=1)
    assert resumed.load(tmp_path) == 2
    assert resumed.claim("1", "/y/1.png") == ("1~2", False)  # in whatever order the images come this time
    assert resumed.claim("1", "/x/1.png") == ("1", False)
    assert resumed.claim("1", "/w/1.png") == ("1~3", True)
    shares = [NameClaims(rank, 2) for rank in range(2)]
    assert sum(share.load(tmp_path) for share in shares) == 2  # each record counted by its owner only


def test_record_lines_cut_short_are_ignored_and_repaired(tmp_path):
    line = record_line('a "quoted" name', "/path/ü.png", {"file_name": "x.png"})
    assert record_key(line) == ('a "quoted" name', "/path/ü.png")
    assert record_key('{"source": "s", "name": "n"}') == ("n", "s")  # other key orders are read too
    path = tmp_path / "rank0.jsonl"
    path.write_text(record_line("done", "s1", {}) + record_line("killed", "s2", {})[:-9])  # killed mid-write
    assert list(iter_record_keys(tmp_path)) == [("done", "s1")]
    writer = RecordWriter(tmp_path, rank=0)  # cuts the partial line before appending
    writer.write("next", "s3", {})
    writer.close()
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["done", "next"]


def write_records(folder: Path, rank: int, names: list[str], task: str) -> None:
    writer = RecordWriter(folder / "records", rank)
    for name in names:
        if task == "instance":
            fields = {"detections": [{"category_id": 1, "score": 0.5, "n": name}, {"category_id": 2, "score": 0.25}]}
        else:
            fields = {"file_name": f"{name}.png", "segments_info": [{"id": 1, "name": name}]}
        writer.write(name, f"/images/{name}", fields)
    writer.close()


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 200])  # in memory, and through sorted temporary runs
def test_merge_sorts_by_name_and_writes_what_json_dumps_writes(tmp_path, chunk_bytes):
    names = [f"{index:03d}" for index in range(30)]
    write_records(tmp_path, 0, names[1::2], "panoptic")
    write_records(tmp_path, 3, names[::2] + ["004"], "panoptic")  # a duplicate: dropped
    categories = [{"id": 1, "name": "thing"}]
    path, count = merge_records(tmp_path, "panoptic", categories, chunk_bytes=chunk_bytes)
    expected = {"annotations": [{"image_id": int(name), "file_name": f"{name}.png", "segments_info": [{"id": 1, "name": name}]}
                                for name in names], "categories": categories}  # fmt: skip
    assert count == 30 and path.read_text() == json.dumps(expected)
    assert not (tmp_path / "records" / ".merge").exists()


def test_merge_of_instances_and_of_names_that_are_not_all_numbers(tmp_path):
    write_records(tmp_path, 0, ["10", "9"], "instance")
    merge_records(tmp_path, "instance", [])
    detections = json.loads((tmp_path / "predictions.json").read_text())
    assert [(d["image_id"], d["category_id"]) for d in detections] == [(10, 1), (10, 2), (9, 1), (9, 2)]  # name order
    write_records(tmp_path, 1, ["sub/1", "009"], "instance")  # 009 and 9: the same number, so ids stay names
    merge_records(tmp_path, "instance", [])
    detections = json.loads((tmp_path / "predictions.json").read_text())
    assert [d["image_id"] for d in detections[::2]] == ["009", "10", "9", "sub/1"]


def test_manifest_differences_name_each_setting():
    earlier = {"task": "panoptic", "model": {"source": "/m1", "weights": "aa"}, "options": {"threshold": 0.3},
               "processor": {"size": {"longest_edge": 64}}}  # fmt: skip
    assert manifest_differences(earlier, json.loads(json.dumps(earlier)) | {"model": {"source": "/moved", "weights": "aa"}}) == []
    now = {"task": "semantic", "model": {"source": "/m2", "weights": "bb"}, "options": {"threshold": 0.5},
           "processor": {"size": {"longest_edge": 48}}}  # fmt: skip
    assert manifest_differences(earlier, now) == [
        "model: other weights (/m1 before, /m2 now)",
        "options.threshold: 0.3 before, 0.5 now",
        "processor.size.longest_edge: 64 before, 48 now",
        'task: "panoptic" before, "semantic" now',
    ]


def test_prepare_output_resumes_refuses_or_replaces(tmp_path):
    out = tmp_path / "out"
    manifest = {"task": "semantic", "model": {"source": "m", "weights": "aa"}}
    prepare_output(out, manifest, overwrite=False)
    (out / "semantic").mkdir()
    (out / "semantic" / "old.png").write_bytes(b"png")
    (out / "mine.txt").write_text("the user's")
    prepare_output(out, manifest, overwrite=False)  # same settings: resumes, nothing removed
    assert (out / "semantic" / "old.png").exists()
    with pytest.raises(OutputConflictError, match=r"other settings \(task: \"semantic\" before, \"panoptic\" now\); pass --overwrite"):
        prepare_output(out, {**manifest, "task": "panoptic"}, overwrite=False)
    assert json.loads((out / MANIFEST_FILE).read_text()) == manifest  # untouched by the refused run
    prepare_output(out, {**manifest, "task": "panoptic"}, overwrite=True)
    assert not (out / "semantic").exists() and (out / "mine.txt").exists()  # results removed, nothing else
    assert json.loads((out / MANIFEST_FILE).read_text())["task"] == "panoptic"
    (tmp_path / "legacy" / "overlays").mkdir(parents=True)
    with pytest.raises(OutputConflictError, match="holds predictions without a run manifest"):
        prepare_output(tmp_path / "legacy", manifest, overwrite=False)


def test_write_atomically_keeps_the_previous_file_when_interrupted(tmp_path):
    path = tmp_path / "predictions.json"
    write_atomically(path, ["[1, ", "2]"])

    def interrupted():
        yield "[3, "
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted())
    assert path.read_text() == "[1, 2]" and [p.name for p in tmp_path.iterdir()] == ["predictions.json"]
