"""Segment image files with an EoMT checkpoint and write overlays and COCO-format results (`eomt predict`).

Every image gets a name, its file stem (made unique with `-2`, `-3`, ... in input order), and these files in the
output directory:

- `overlays/<name>.png`: the image with its segments outlined and a legend (`image_processing.draw_result`);
- panoptic: `panoptic/<name>.png`, a COCO panoptic PNG (segment id `R + 256 G + 256^2 B`, 0 = void; segment ids
  from 1 in query order), and `predictions.json` in COCO's panoptic results format: `{"annotations": [{"image_id",
  "file_name", "segments_info": [{"id", "category_id", "score", "isthing"?, "area", "bbox"}]}], "categories":
  [{"id", "name", "isthing"?}]}`; `isthing` is present when the stuff classes are known;
- instance: `predictions.json` in COCO's detection results format, one entry per instance (overlaps kept):
  `[{"image_id", "category_id", "segmentation": {"size": [H, W], "counts": RLE string}, "score", "bbox"}]`;
- semantic: `semantic/<name>.png`, the class index of every pixel (uint8, or uint16 for more than 256 classes;
  every pixel gets a class, there is no "none" value), and `predictions.json` `{"annotations": [{"image_id",
  "file_name"}], "categories": [{"id", "name"}]}`.

`category_id` is the data set's own category id of the class (`config.category_ids`, recorded by `eomt train`; COCO's
ids for models with COCO's classes; else the class index: `modeling_eomt.labels.class_category_ids`), so that
panopticapi and pycocotools score the results against the data set's ground truth directly.
`image_id` is the name as an int when every name is a number (COCO's file names), else the name. Boxes are COCO's
`[x, y, width, height]`.

Images that cannot be read are skipped (and reported as it happens); the others are processed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from image_processing import EoMTImageProcessor, draw_result, id_to_rgb, instance_map, to_rgb_array
from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.labels import COCO_NUM_THING_CLASSES, COCO_PANOPTIC_CATEGORIES, DATASET_CLASSES, class_category_ids
from training.metrics.mask_ap import encode_masks

TASKS = ("panoptic", "instance", "semantic")
IMAGE_EXTENSIONS = frozenset(ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)
PREDICTIONS_FILE = "predictions.json"


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (its type name if it has none)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# ----------------------------------------------------------------------------------------------------------------------
# Inputs: image files, the processor, the model's forward
# ----------------------------------------------------------------------------------------------------------------------


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_in(directory: Path, recursive: bool) -> list[Path]:
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(path for path in candidates if _is_image_file(path))


def find_images(inputs: Sequence[str], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """The image files named by `inputs` and one message per input that names none.

    Files are taken as given (an unreadable one fails when it is read); directories give the files with an image
    extension inside them (sorted; sub-directories with `recursive`); glob patterns (`*`, `?`, `[...]`; `**` with
    `recursive`) give the matching image files and the images of matching directories. Duplicates are dropped."""
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = _images_in(path, recursive)
            if not found:
                problems.append(f"{item}: no image files in this directory{'' if recursive else ' (see --recursive)'}")
        elif path.is_file():
            found = [path]
        elif any(char in item for char in "*?["):
            found = []
            for match in map(Path, sorted(glob.glob(item, recursive=recursive))):
                found += _images_in(match, recursive) if match.is_dir() else [match] if _is_image_file(match) else []
            if not found:
                problems.append(f"{item}: no image file matches this pattern")
        else:
            problems.append(f"{item}: no such file or directory")
            found = []
        paths += found
    seen: set[Path] = set()
    unique = [path for path in paths if not (path.resolve() in seen or seen.add(path.resolve()))]
    return unique, problems


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


def output_names(paths: Sequence[Path]) -> list[str]:
    """One unique name per path: its stem, or `stem-2`, `stem-3`, ... for later files with the same stem."""
    names: list[str] = []
    used: set[str] = set()
    for path in paths:
        name, count = path.stem, 1
        while name in used:
            count += 1
            name = f"{path.stem}-{count}"
        used.add(name)
        names.append(name)
    return names


def class_names(id2label: dict[int, str]) -> tuple[str, ...]:
    """The class names in class-index order, as `modeling_eomt.labels.DATASET_CLASSES` lists them."""
    return tuple(id2label[label] for label in sorted(id2label))


def coco_category_ids(id2label: dict[int, str]) -> list[int] | None:
    """COCO category id of every class when the classes are COCO's panoptic (133) or instance (80) ones, else None."""
    names = class_names(id2label)
    for dataset in ("coco_panoptic", "coco_instance"):
        if names == DATASET_CLASSES[dataset]:
            return [category_id for category_id, _ in COCO_PANOPTIC_CATEGORIES[: len(names)]]
    return None


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
    """Writes the overlay and result files of one task, image by image, and `predictions.json` at the end."""

    def __init__(self, out_dir: Path, task: str, id2label: dict[int, str], stuff_classes: Sequence[int] | None) -> None:
        self.out_dir, self.task, self.id2label = out_dir, task, id2label
        self.category_ids = coco_category_ids(id2label) or sorted(id2label)
        self.stuff = None if stuff_classes is None else set(stuff_classes)
        self.entries: list[dict[str, Any]] = []
        self.result_dir = out_dir / task if task != "instance" else None
        for directory in (out_dir / "overlays", self.result_dir):
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)

    def categories(self) -> list[dict[str, Any]]:
        categories = []
        for label in sorted(self.id2label):
            category = {"id": self.category_ids[label], "name": self.id2label[label]}
            if self.task == "panoptic" and self.stuff is not None:
                category["isthing"] = int(label not in self.stuff)
            categories.append(category)
        return categories

    def add(self, name: str, image_id: int | str, image: np.ndarray, result: Any) -> None:
        """Write the files of one image, from its post-processing result (on any device)."""
        image = image if image.dtype == np.uint8 else image.clip(0, 255).astype(np.uint8)  # 16-bit inputs
        if self.task == "panoptic":
            self._add_panoptic(name, image_id, result)
        elif self.task == "instance":
            self._add_instance(image_id, result)
            result = {"segmentation": instance_map(result["segmentation"]), "segments_info": result["segments_info"]}
        else:
            self._add_semantic(name, image_id, result)
        draw_result(image, result, self.id2label, path=self.out_dir / "overlays" / f"{name}.png")

    def _add_panoptic(self, name: str, image_id: int | str, result: dict[str, Any]) -> None:
        id_map = result["segmentation"].cpu().numpy() + 1  # (H, W): segment ids from 1, 0 = void
        Image.fromarray(id_to_rgb(id_map)).save(self.result_dir / f"{name}.png")
        areas, boxes = segment_areas_and_boxes(id_map, len(result["segments_info"]) + 1)
        segments = []
        for segment in result["segments_info"]:
            segment_id, label = segment["id"] + 1, segment["label_id"]
            entry = {"id": segment_id, "category_id": self.category_ids[label], "score": segment["score"]}
            if self.stuff is not None:
                entry["isthing"] = int(label not in self.stuff)
            entry.update(area=int(areas[segment_id]), bbox=boxes[segment_id].tolist())
            segments.append(entry)
        self.entries.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments})

    def _add_instance(self, image_id: int | str, result: dict[str, Any]) -> None:
        rles = encode_masks(result["segmentation"])  # (I, H, W) bool, overlaps kept
        boxes = mask_utils.toBbox(rles).tolist() if rles else []
        for segment, rle, box in zip(result["segments_info"], rles, boxes):
            self.entries.append({
                "image_id": image_id, "category_id": self.category_ids[segment["label_id"]], "segmentation": rle,
                "score": segment["score"], "bbox": box,
            })  # fmt: skip

    def _add_semantic(self, name: str, image_id: int | str, result: torch.Tensor) -> None:
        dtype = np.uint8 if len(self.id2label) <= 256 else np.uint16
        Image.fromarray(result.cpu().numpy().astype(dtype)).save(self.result_dir / f"{name}.png")
        self.entries.append({"image_id": image_id, "file_name": f"{name}.png"})

    def finish(self) -> Path:
        """Write `predictions.json` and return its path."""
        if self.task == "instance":
            document: Any = self.entries
        else:
            document = {"annotations": self.entries, "categories": self.categories()}
        path = self.out_dir / PREDICTIONS_FILE
        path.write_text(json.dumps(document))
        return path


# ----------------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------------


def _read_batch(paths: Sequence[Path], processor: EoMTImageProcessor) -> tuple[list[int], list[np.ndarray], Any, list]:
    """Indices and RGB arrays of the readable images of `paths`, their model inputs (None if none is readable),
    and one message per unreadable image."""
    indices, images, problems = [], [], []
    for index, path in enumerate(paths):
        try:
            images.append(to_rgb_array(str(path), source=str(path)))
            indices.append(index)
        except (ValueError, TypeError) as error:
            problems.append(first_line(error))
    inputs = processor(images, return_tensors="pt") if images else None
    return indices, images, inputs, problems


def _batches(paths: Sequence[Path], processor: EoMTImageProcessor, batch_size: int) -> Iterator[tuple[int, Any]]:
    """`(start, _read_batch(...))` for consecutive batches; the next batch is read in a thread meanwhile."""
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read_batch, paths[:batch_size], processor)
        for start in starts:
            batch = pending.result()
            if start + batch_size < len(paths):
                pending = pool.submit(_read_batch, paths[start + batch_size : start + 2 * batch_size], processor)
            yield start, batch


def post_process(processor: EoMTImageProcessor, outputs: Any, sizes: torch.Tensor, task: str, options: dict) -> list:
    """The processor's post-processing of `task`; instance results keep overlapping binary masks."""
    if task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    if task == "instance":
        return processor.post_process_instance_segmentation(
            outputs, target_sizes=sizes, threshold=options["threshold"], return_binary_maps=True
        )
    return processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes, **options)


def predict_files(
    model: EoMTForUniversalSegmentation,
    processor: EoMTImageProcessor,
    paths: Sequence[Path],
    out_dir: str | Path,
    task: str,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    threshold: float = 0.8,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    stuff_classes: Sequence[int] | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> tuple[Path, list[str]]:
    """Segment the images at `paths` and write their files (see the module docstring) to `out_dir`.

    `threshold` applies to panoptic and instance segmentation; `mask_threshold`, `overlap_mask_area_threshold` and
    `stuff_classes` (classes fused into one segment per image; None: `default_stuff_classes`) to panoptic
    segmentation. Returns the path of `predictions.json` and one message per image that could not be read (also
    passed to `report` as it happens)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    forward = prepare_model(model, device, dtype)
    id2label = {int(label): name for label, name in model.config.id2label.items()}
    if stuff_classes is None:
        stuff_classes = default_stuff_classes(processor, id2label)
    options = {"threshold": threshold}
    if task == "panoptic":
        options.update(mask_threshold=mask_threshold, overlap_mask_area_threshold=overlap_mask_area_threshold,
                       stuff_classes=stuff_classes)  # fmt: skip
    writer = ResultWriter(Path(out_dir), task, id2label, stuff_classes)
    writer.category_ids = class_category_ids(model.config)  # the data set's own ids (config.category_ids) when known
    names = output_names(paths)
    numeric = all(name.isdigit() for name in names) and len({int(name) for name in names}) == len(names)
    image_ids: list[int | str] = [int(name) for name in names] if numeric else names
    problems: list[str] = []
    bar = tqdm(total=len(paths), desc=f"eomt predict ({task})", unit="img", file=sys.stderr, disable=not progress)
    with bar:
        for start, (indices, images, inputs, batch_problems) in _batches(paths, processor, batch_size):
            for problem in batch_problems:
                if report is not None:
                    report(problem)
            problems += batch_problems
            if inputs is not None:
                outputs = forward(inputs["pixel_values"], inputs.get("patch_offsets"))
                with torch.inference_mode():
                    results = post_process(processor, outputs, inputs["original_sizes"], task, options)
                for index, image, result in zip(indices, images, results):
                    writer.add(names[start + index], image_ids[start + index], image, result)
            bar.update(min(batch_size, len(paths) - start))
    return writer.finish(), problems
