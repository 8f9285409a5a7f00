"""The validation pass run before training: every problem of a data set, each naming its file, in one error.

Every record is checked, in parallel threads (decoders release the GIL):
1. the problems found while reading the annotation files (unknown images or categories, repeated ids);
2. its files exist, open as images (header only) and have the size the annotations give (or else the size of the
   record's other files);
3. it is read as training reads it (`source[i]`: label maps decoded, segment ids, classes and label values checked,
   targets built), except that its images are only streamed through the decoder, JPEGs at 1/8 scale, which still
   reads every byte of their compressed data (`SegmentationSource.verifying`). This finds everything the full check
   finds (a truncated or corrupt file anywhere, PNG segment ids missing from `segments_info`, label values out of
   range) at less cost; `decode=True` is the full check (images decoded at full size; docs/benchmarks: data-loading).
A record whose files failed step 2 is not read in step 3, so each broken file is reported once. What the readers
leave out or notice without it being an error (images without annotation, segments listed without pixels) is
returned as `warnings`.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .base import SampleError, SegmentationSource

logger = logging.getLogger(__name__)

MAX_WARNINGS = 20  # warnings listed individually; the rest are counted


@dataclass
class ValidationReport:
    """What `validate_dataset` found: `problems` (each "file: what is wrong") and `warnings` (what the reader left
    out or noticed, e.g. segments listed without pixels)."""

    name: str
    num_records: int
    num_files: int
    decoded: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, max_reported: int = 20) -> str:
        head = (f"{self.name}: {len(self.problems)} problem(s) in {self.num_records} records "
                f"({self.num_files} files checked, {self.decoded} records read, {self.seconds:.1f} s)")  # fmt: skip
        lines = [f"  - {problem}" for problem in self.problems[:max_reported]]
        if len(self.problems) > max_reported:
            lines.append(f"  ... and {len(self.problems) - max_reported} more")
        return "\n".join([head, *lines])


class DatasetValidationError(ValueError):
    """The data set has problems; `report` lists them all."""

    def __init__(self, report: ValidationReport, max_reported: int) -> None:
        super().__init__(report.summary(max_reported))
        self.report = report


def _image_size(path: str, role: str) -> tuple[tuple[int, int] | None, str | None]:
    """`((height, width), None)` from the file header, or `(None, problem)`."""
    if not os.path.isfile(path):
        return None, f"{path}: missing {role} file"
    try:
        with Image.open(path) as image:
            return (image.height, image.width), None
    except UnidentifiedImageError:
        return None, f"{path}: not a readable image ({role} file corrupt or of an unknown format)"
    except (OSError, Image.DecompressionBombError) as error:
        return None, f"{path}: cannot read {role} file ({error})"


def _check_files(source: SegmentationSource, record: dict[str, Any]) -> list[str]:
    """Existence, header and size agreement of one record's files."""
    problems, sizes = [], []
    for check in source.files(record):
        size, problem = _image_size(check.path, check.role)
        if problem:
            problems.append(problem)
            continue
        if check.size is not None:  # the annotations give the size
            if size != tuple(check.size):
                problems.append(
                    f"{check.path}: is {size[0]}x{size[1]} but the annotations say {check.size[0]}x{check.size[1]}"
                )
        elif sizes and size != sizes[0][1]:  # else the record's files must agree
            problems.append(
                f"{check.path}: is {size[0]}x{size[1]} but {sizes[0][0]} is {sizes[0][1][0]}x{sizes[0][1][1]}"
            )
        sizes.append((check.path, size))
    return problems


def _read_record(source: SegmentationSource, index: int) -> tuple[list[str], list[str]]:
    """`(problems, warnings)` of reading record `index` as training does."""
    try:
        sample = source[index]
    except SampleError as error:
        return [str(error)], []
    return [], list(sample.notes)


def validate_dataset(
    source: SegmentationSource,
    *,
    decode: bool = False,
    max_reported: int = 20,
    num_threads: int = 8,
    progress: bool = True,
    raise_on_problems: bool = True,
) -> ValidationReport:
    """Check every record of `source` (see the module docstring; `decode=True`: decode images at full size); raise
    `DatasetValidationError` listing the first `max_reported` problems and their count (or, with
    `raise_on_problems=False`, return them in the report)."""
    start = time.perf_counter()
    problems = list(source.annotation_problems)
    num_records = len(source)
    reader = source if decode else source.verifying()
    columns = [c for c in source.file_columns if c in source.records.column_names]
    with ThreadPoolExecutor(max(1, num_threads)) as pool, tqdm(
        total=num_records * (1 + bool(columns)), desc=f"validating {source.info.name}", unit="rec",
        disable=not progress or num_records < 1000,
    ) as bar:  # fmt: skip
        num_files, unreadable = 0, set()
        if columns:
            for offset, batch in zip(
                range(0, num_records, 1024), source.records.select_columns(columns).iter(batch_size=1024)
            ):
                records = [dict(zip(batch, values)) for values in zip(*batch.values())]
                num_files += sum(len(source.files(record)) for record in records)
                for index, found in enumerate(pool.map(lambda record: _check_files(source, record), records), offset):
                    problems += found
                    unreadable.update([index] if found else [])
                bar.update(len(records))
        to_read = [index for index in range(num_records) if index not in unreadable]
        bar.total -= num_records - len(to_read)
        notes: list[str] = []
        for found, noticed in pool.map(lambda index: _read_record(reader, index), to_read):
            problems += found
            notes += noticed
            bar.update()
    warnings = list(source.warnings) + notes[:MAX_WARNINGS]
    if len(notes) > MAX_WARNINGS:
        warnings.append(f"... and {len(notes) - MAX_WARNINGS} more records with the same kind of notes")
    report = ValidationReport(source.info.name, num_records, num_files, len(to_read), problems, warnings,
                              time.perf_counter() - start)  # fmt: skip
    if notes:
        logger.warning("%s: %d record(s) read with notes, e.g. %s", source.info.name, len(notes), notes[0])
    if problems and raise_on_problems:
        raise DatasetValidationError(report, max_reported)
    return report
