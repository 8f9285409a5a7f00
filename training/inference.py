"""Segment images with an EoMT checkpoint and write overlays and COCO-format results (`eomt predict`): resumable,
shardable across processes, streaming its inputs.

Every image gets a name (`training.prediction_inputs`: its path relative to the input that found it, without the
extension; `~2`, `~3`, ... for a second image of the same name) and these files in the output folder:

- `overlays/<name>.png`: the image with its segments outlined and a legend (`image_processing.draw_result`);
- panoptic: `panoptic/<name>.png`, a COCO panoptic PNG (segment id `R + 256 G + 256^2 B`, 0 = void; segment ids
  from 1 in query order), and `predictions.json` in COCO's panoptic results format: `{"annotations": [{"image_id",
  "file_name", "segments_info": [{"id", "category_id", "score", "isthing"?, "area", "bbox"}]}], "categories":
  [{"id", "name", "isthing"?}]}`; `isthing` is present when the stuff classes are known;
- instance: `predictions.json` in COCO's detection results format, one entry per instance (overlaps kept):
  `[{"image_id", "category_id", "segmentation": {"size": [H, W], "counts": RLE string}, "score", "bbox"}]`;
- semantic: `semantic/<name>.png`, the class index of every pixel (uint8, or uint16 for more than 256 classes;
  every pixel gets a class, there is no "none" value), and `predictions.json` `{"annotations": [{"image_id",
  "file_name"}], "categories": [{"id", "name"}]}`;
- `run.json` (the settings of the run) and `records/` (one line per image done), which make a run resumable
  (`training.prediction_store`).

`predictions.json` lists the images sorted by name. `category_id` is the data set's own category id of the class
(`config.category_ids`, recorded by `eomt train`; COCO's ids for models with COCO's classes; else the class index:
`modeling_eomt.labels.class_category_ids`), so that panopticapi and pycocotools score the results against the data
set's ground truth directly.
`image_id` is the name as an int when every name is a number (COCO's file names), else the name. Boxes are COCO's
`[x, y, width, height]`.

A run never stops for one image: an image that cannot be read, decoded or segmented is reported (named, one line) and
skipped; the others are written. A second run into the same folder with the same settings skips the images already
done; with other settings it is an error unless `overwrite`. Under `accelerate launch` / `torchrun` each process
segments the images whose name hashes to its rank, and process 0 merges everyone's records into `predictions.json`:
the same files as one process writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from image_processing import EoMTImageProcessor, draw_result, id_to_rgb, instance_map
from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.labels import COCO_NUM_THING_CLASSES, DATASET_CLASSES, class_category_ids
from training.metrics.mask_ap import encode_masks
from training.prediction_inputs import ImageItem, file_items, first_line, processor_input, read_image
from training.prediction_store import (
    MANIFEST_FORMAT,
    PREDICTIONS_FILE,
    RECORDS_DIR,
    NameClaims,
    OutputConflictError,
    Processes,
    RecordWriter,
    merge_records,
    prepare_output,
    weights_fingerprint,
)

TASKS = ("panoptic", "instance", "semantic")


# ----------------------------------------------------------------------------------------------------------------------
# The processor and the model's forward
# ----------------------------------------------------------------------------------------------------------------------


def load_processor(source: str, config: Any, task: str) -> EoMTImageProcessor:
    """The model's `preprocessor_config.json` (local directory or Hub id) if it has one, else the defaults for `task`:
    the longer side resized to `config.image_size` and padded (panoptic, instance), or the shorter side resized to
    it and cut into sliding windows (semantic). Panoptic and instance segmentation always use whole images."""
    path = Path(source)
    processor = None
    if path.is_dir() and (path / "preprocessor_config.json").is_file():
        processor = EoMTImageProcessor.from_pretrained(path)
    elif not path.exists():
        with contextlib.suppress(OSError, ValueError):  # a Hub repo without a processor config, or offline
            processor = EoMTImageProcessor.from_pretrained(source)
    if processor is None:
        windows = task == "semantic"
        processor = EoMTImageProcessor(size=config.image_size, do_split_image=windows, num_labels=config.num_labels)
    if task != "semantic":
        processor.do_split_image = False
    return processor


def prepare_model(
    model: EoMTForUniversalSegmentation, device: torch.device, dtype: torch.dtype
) -> Callable[..., Any]:
    """Move `model` to `device` and return its forward for `dtype`: `(pixel_values, patch_offsets=None) -> outputs`,
    in inference mode, taking float32 `pixel_values` on any device.

    bfloat16 and float16 run as `model.enable_fast_inference(dtype)` sets up: under autocast, as the authors run
    inference (matrix products and convolutions in half precision, normalisation and softmax in float32, the weights
    and the returned logits in float32); float32 switches it off. On CPU, bfloat16 autocast is as fast as casting
    the weights (`eomt benchmark --sections predict`) and closer to float32; float16 has no fast CPU kernels."""
    model.to(device).enable_fast_inference(None if dtype == torch.float32 else dtype)

    def forward(pixel_values: torch.Tensor, patch_offsets: list[torch.Tensor] | None = None) -> Any:
        with torch.inference_mode():
            return model(pixel_values.to(device), patch_offsets=patch_offsets)

    return forward


# ----------------------------------------------------------------------------------------------------------------------
# Result files
# ----------------------------------------------------------------------------------------------------------------------


def class_names(id2label: dict[int, str]) -> tuple[str, ...]:
    """The class names in class-index order, as `modeling_eomt.labels.DATASET_CLASSES` lists them."""
    return tuple(id2label[label] for label in sorted(id2label))


def default_stuff_classes(processor: EoMTImageProcessor, id2label: dict[int, str]) -> list[int] | None:
    """The processor's stuff classes, else COCO's 53 for models with the COCO panoptic classes, else None."""
    if processor.stuff_classes is not None:
        return processor.stuff_classes
    if class_names(id2label) == DATASET_CLASSES["coco_panoptic"]:
        return list(range(COCO_NUM_THING_CLASSES, len(id2label)))
    return None


def segment_areas_and_boxes(id_map: np.ndarray, num_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count `(n,)` and COCO box `[x, y, width, height]` `(n, 4)` of each id `0 .. n - 1` of `id_map` `(H, W)`
    (all zero for an absent id), in one pass over the pixels."""
    height, width = id_map.shape
    areas = np.bincount(id_map.ravel(), minlength=num_ids)
    rows = np.zeros((num_ids, height), dtype=bool)  # rows[i, y]: id i occurs in row y
    cols = np.zeros((num_ids, width), dtype=bool)
    rows[id_map, np.arange(height)[:, None]] = True
    cols[id_map, np.arange(width)[None, :]] = True
    top, bottom = rows.argmax(1), height - rows[:, ::-1].argmax(1)
    left, right = cols.argmax(1), width - cols[:, ::-1].argmax(1)
    boxes = np.stack([left, top, right - left, bottom - top], axis=1) * (areas > 0)[:, None]
    return areas, boxes


class ResultWriter:
    """Writes the overlay and result files of one task, image by image, and returns what `predictions.json` will say
    about each image."""

    def __init__(
        self,
        out_dir: Path,
        task: str,
        id2label: dict[int, str],
        stuff_classes: Sequence[int] | None,
        category_ids: Sequence[int],
    ) -> None:
        """`category_ids[i]`: the category id written for class index `i` (`modeling_eomt.labels.class_category_ids`)."""
        self.out_dir, self.task, self.id2label = out_dir, task, id2label
        self.category_ids = list(category_ids)
        self.stuff = None if stuff_classes is None else set(stuff_classes)
        self.result_dir = out_dir / task if task != "instance" else None
        self._folders: set[Path] = set()

    def categories(self) -> list[dict[str, Any]]:
        categories = []
        for label in sorted(self.id2label):
            category = {"id": self.category_ids[label], "name": self.id2label[label]}
            if self.task == "panoptic" and self.stuff is not None:
                category["isthing"] = int(label not in self.stuff)
            categories.append(category)
        return categories

    def _file(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        if path.parent not in self._folders:  # names may have folders (`sub/image`)
            path.parent.mkdir(parents=True, exist_ok=True)
            if len(self._folders) < 4096:
                self._folders.add(path.parent)
        return path

    def write(self, name: str, image: np.ndarray, result: Any) -> dict[str, Any]:
        """Write the files of one image, from its post-processing result (on any device); returns the image's fields
        of `predictions.json` (without `image_id`): `file_name` and `segments_info` (panoptic), `file_name`
        (semantic), or `detections` (instance)."""
        image = image if image.dtype == np.uint8 else image.clip(0, 255).astype(np.uint8)  # 16-bit inputs
        if self.task == "panoptic":
            fields = self._write_panoptic(name, result)
        elif self.task == "instance":
            fields = {"detections": self._detections(result)}
            result = {"segmentation": instance_map(result["segmentation"]), "segments_info": result["segments_info"]}
        else:
            fields = self._write_semantic(name, result)
        draw_result(image, result, self.id2label, path=self._file(self.out_dir / "overlays", name))
        return fields

    def _write_panoptic(self, name: str, result: dict[str, Any]) -> dict[str, Any]:
        id_map = result["segmentation"].cpu().numpy() + 1  # (H, W): segment ids from 1, 0 = void
        Image.fromarray(id_to_rgb(id_map)).save(self._file(self.result_dir, name))
        areas, boxes = segment_areas_and_boxes(id_map, len(result["segments_info"]) + 1)
        segments = []
        for segment in result["segments_info"]:
            segment_id, label = segment["id"] + 1, segment["label_id"]
            entry = {"id": segment_id, "category_id": self.category_ids[label], "score": segment["score"]}
            if self.stuff is not None:
                entry["isthing"] = int(label not in self.stuff)
            entry.update(area=int(areas[segment_id]), bbox=boxes[segment_id].tolist())
            segments.append(entry)
        return {"file_name": f"{name}.png", "segments_info": segments}

    def _detections(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        rles = encode_masks(result["segmentation"])  # (I, H, W) bool, overlaps kept
        boxes = mask_utils.toBbox(rles).tolist() if rles else []
        return [
            {"category_id": self.category_ids[segment["label_id"]], "segmentation": rle, "score": segment["score"],
             "bbox": box}
            for segment, rle, box in zip(result["segments_info"], rles, boxes)
        ]  # fmt: skip

    def _write_semantic(self, name: str, result: torch.Tensor) -> dict[str, Any]:
        dtype = np.uint8 if len(self.id2label) <= 256 else np.uint16
        Image.fromarray(result.cpu().numpy().astype(dtype)).save(self._file(self.result_dir, name))
        return {"file_name": f"{name}.png"}


# ----------------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------------

# Write errors that belong to one image (its name), not to the output folder (full, read-only): reported and skipped.
_NAME_ERRORS = (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ)


@dataclass
class _Batch:
    """Up to `batch_size` decoded images of this process with their processor inputs (None if the processor failed
    on the batch), and what was met on the way: messages of unusable images, images skipped as done."""

    items: list[ImageItem] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    inputs: Any = None
    problems: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def size(self) -> int:
        return len(self.items) + len(self.problems) + self.skipped


def _preprocess(processor: EoMTImageProcessor, images: Sequence[np.ndarray]) -> Any:
    return processor([processor_input(image) for image in images], return_tensors="pt")


def _read_batches(
    items: Iterable[ImageItem], claims: NameClaims, processor: EoMTImageProcessor, batch_size: int
) -> Iterator[_Batch]:
    """This process's images, named, decoded and pre-processed in batches; the images done already are skipped."""
    batch = _Batch()
    for item in items:
        if not claims.owns(item.name):
            continue
        name, new = claims.claim(item.name, item.identity)
        if not new:
            batch.skipped += 1
        else:
            try:
                batch.images.append(read_image(item))
                batch.items.append(replace(item, name=name))
            except ValueError as error:
                batch.problems.append(str(error))
        if len(batch.items) == batch_size or len(batch.problems) == batch_size or batch.skipped == 1024:
            yield _finished(batch, processor)
            batch = _Batch()
    if batch.size:
        yield _finished(batch, processor)


def _finished(batch: _Batch, processor: EoMTImageProcessor) -> _Batch:
    if batch.images:
        try:
            batch.inputs = _preprocess(processor, batch.images)
        except Exception:  # noqa: BLE001 (one image the processor rejects: the images are then processed one by one)
            batch.inputs = None
    return batch


def _prefetched(batches: Iterator[_Batch]) -> Iterator[_Batch]:
    """`batches`, the next one read in a thread while the current one is segmented."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch


def post_process(processor: EoMTImageProcessor, outputs: Any, sizes: torch.Tensor, task: str, options: dict) -> list:
    """The processor's post-processing of `task`; instance results keep overlapping binary masks."""
    if task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    if task == "instance":
        return processor.post_process_instance_segmentation(
            outputs, target_sizes=sizes, threshold=options["threshold"], return_binary_maps=True
        )
    return processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes, **options)


class _Segmenter:
    """Model and post-processing of a batch; an image that fails is reported instead of its result."""

    def __init__(self, forward: Callable[..., Any], processor: EoMTImageProcessor, task: str, options: dict) -> None:
        self.forward, self.processor, self.task, self.options = forward, processor, task, options

    def _results(self, inputs: Any) -> list:
        outputs = self.forward(inputs["pixel_values"], inputs.get("patch_offsets"))
        with torch.inference_mode():
            return post_process(self.processor, outputs, inputs["original_sizes"], self.task, self.options)

    def __call__(self, batch: _Batch) -> list[Any]:
        """One result per image of `batch`, or a message (str) for an image that could not be segmented: when the
        batch fails as a whole, each image is tried alone (so a GPU out of memory on a large batch costs no image)."""
        if batch.inputs is not None:
            try:
                return self._results(batch.inputs)
            except Exception as error:  # noqa: BLE001
                if len(batch.items) == 1:
                    return [self._failure(batch.items[0], error)]
        results = []
        for item, image in zip(batch.items, batch.images):
            try:
                results.append(self._results(_preprocess(self.processor, [image]))[0])
            except Exception as error:  # noqa: BLE001
                results.append(self._failure(item, error))
        return results

    @staticmethod
    def _failure(item: ImageItem, error: BaseException) -> str:
        return f"{item.source}: cannot be segmented ({type(error).__name__}: {first_line(error)})"


def run_manifest(
    model: EoMTForUniversalSegmentation,
    processor: EoMTImageProcessor,
    task: str,
    options: dict[str, Any],
    dtype: torch.dtype,
    model_source: str | None = None,
    inputs: Any = None,
) -> dict[str, Any]:
    """What a run's results depend on (`run.json`): compared with the next run into the same folder."""
    return {
        "format": MANIFEST_FORMAT,
        "task": task,
        "model": {"source": model_source or model.config.name_or_path or None, "weights": weights_fingerprint(model)},
        "processor": processor.to_dict(),
        "options": {**options, "dtype": str(dtype).removeprefix("torch.")},
        "inputs": inputs,
    }


@dataclass
class PredictRun:
    """What a run did. Counts are over all processes; `problems` are this process's messages (every one was also
    passed to `report`)."""

    predictions: Path  # predictions.json
    images: int  # images in predictions.json (this run's and the earlier runs')
    segmented: int  # images segmented by this run
    skipped: int  # images skipped as done already (by an earlier run, or named twice)
    failed: int  # images that could not be read or segmented
    problems: list[str]


def run_predictions(
    model: EoMTForUniversalSegmentation,
    processor: EoMTImageProcessor,
    items: Iterable[ImageItem],
    out_dir: str | Path,
    task: str,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    threshold: float | None = None,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float | None = None,
    stuff_classes: Sequence[int] | None = None,
    overwrite: bool = False,
    model_source: str | None = None,
    inputs: Any = None,
    processes: Processes | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> PredictRun:
    """Segment `items` (`training.prediction_inputs`) and write their files (see the module docstring) to `out_dir`.

    `threshold` applies to panoptic and instance segmentation; `mask_threshold`, `overlap_mask_area_threshold` and
    `stuff_classes` (classes fused into one segment per image; None: `default_stuff_classes`) to panoptic
    segmentation; None thresholds are the processor's (the authors' 0.8 unless `eomt train` chose others). `out_dir` may hold an earlier run with the same settings (its images are skipped) or, with
    `overwrite`, anything (removed first); `inputs` (any JSON value describing them) and `model_source` are part of
    the settings. With several `processes` (default: the running `torch.distributed` group), every process is given
    the same `items` and segments its share; all of them return the same counts. `report` receives one message per
    image that could not be used, as it happens. Raises `OutputConflictError` (a `ValueError`) if `out_dir` holds
    results of other settings or cannot be written."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    processes = processes or Processes.current()
    out_dir, device = Path(out_dir), torch.device(device)
    id2label = {int(label): name for label, name in model.config.id2label.items()}
    if stuff_classes is None:
        stuff_classes = default_stuff_classes(processor, id2label)
    threshold = processor.threshold if threshold is None else threshold
    if overlap_mask_area_threshold is None:
        overlap_mask_area_threshold = processor.overlap_mask_area_threshold
    options: dict[str, Any] = {"threshold": threshold} if task != "semantic" else {}
    if task == "panoptic":
        options.update(mask_threshold=mask_threshold, overlap_mask_area_threshold=overlap_mask_area_threshold,
                       stuff_classes=None if stuff_classes is None else list(stuff_classes))  # fmt: skip
    manifest = run_manifest(model, processor, task, options, dtype, model_source, inputs)
    conflict = None
    if processes.is_main:
        try:
            prepare_output(out_dir, manifest, overwrite)
        except OutputConflictError as error:
            conflict = str(error)
        except OSError as error:
            conflict = f"{out_dir}: cannot write the results there ({first_line(error)})"
    conflict = processes.broadcast(conflict)  # the others wait until the folder is ready
    if conflict is not None:
        raise OutputConflictError(conflict)

    claims = NameClaims(processes.rank, processes.world_size)
    claims.load(out_dir / RECORDS_DIR)
    records = RecordWriter(out_dir / RECORDS_DIR, processes.rank)
    writer = ResultWriter(out_dir, task, id2label, stuff_classes, class_category_ids(model.config))
    segment = _Segmenter(prepare_model(model, device, dtype), processor, task, options)
    problems: list[str] = []
    segmented = skipped = 0

    def problem(message: str) -> None:
        problems.append(message)
        if report is not None:
            report(message)

    where = "" if processes.world_size == 1 else f", process {processes.rank + 1}/{processes.world_size}"
    show = progress and processes.is_main
    bar = tqdm(desc=f"eomt predict ({task}{where})", unit="img", file=sys.stderr, disable=not show)
    try:
        with bar:
            for batch in _prefetched(_read_batches(items, claims, processor, batch_size)):
                for message in batch.problems:
                    problem(message)
                skipped += batch.skipped
                for item, image, result in zip(batch.items, batch.images, segment(batch) if batch.items else []):
                    if isinstance(result, str):
                        problem(result)
                        continue
                    try:
                        fields = writer.write(item.name, image, result)
                    except OSError as error:
                        if error.errno not in _NAME_ERRORS:
                            raise
                        problem(f"{item.source}: cannot write its results as {item.name!r} ({first_line(error)})")
                        continue
                    records.write(item.name, item.identity, fields)
                    segmented += 1
                bar.update(batch.size)
    finally:
        size = records.close()
    counts = processes.gather((size, segmented, skipped, len(problems)))  # every process is done
    merged: tuple[str | None, int] = (None, 0)
    if processes.is_main:
        merged = _merge(out_dir, task, writer.categories(), [count[0] for count in counts])
    error, images = processes.broadcast(merged)
    if error is not None:
        raise OutputConflictError(error)
    totals = np.sum([count[1:] for count in counts], axis=0).tolist()
    return PredictRun(out_dir / PREDICTIONS_FILE, images, totals[0], totals[1], totals[2], problems)


def _merge(out_dir: Path, task: str, categories: list[dict[str, Any]], sizes: list[int]) -> tuple[str | None, int]:
    """`merge_records` once the records of every process are seen here: `(error message or None, images)`."""
    for rank, size in enumerate(sizes):
        path = out_dir / RECORDS_DIR / f"rank{rank}.jsonl"
        seen = path.stat().st_size if path.is_file() else 0
        if seen != size:
            return (f"{path}: process {rank} wrote {size} bytes, this process sees {seen}: the output folder must be "
                    f"one that every process shares (its results stay in its own copy; rerun to merge)"), 0  # fmt: skip
    return None, merge_records(out_dir, task, categories)[1]


def predict_files(
    model: EoMTForUniversalSegmentation,
    processor: EoMTImageProcessor,
    paths: Iterable[str | os.PathLike],
    out_dir: str | Path,
    task: str,
    **options: Any,
) -> tuple[Path, list[str]]:
    """`run_predictions` for image files, each named by its stem: returns the path of `predictions.json` and one
    message per image that could not be used."""
    run = run_predictions(model, processor, file_items(paths), out_dir, task, **options)
    return run.predictions, run.problems
