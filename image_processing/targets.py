"""Segmentation annotations as per-segment binary masks: the one target format of the project.

A `MaskTarget` holds, for one image, `masks (n, H, W)` bool, `labels (n,)` int64 class indices (contiguous,
`0 .. num_labels - 1`) and `is_crowd (n,)` bool. Crowd segments are kept (metrics need them; training drops them);
void / ignored pixels belong to no mask. Everything here works on numpy arrays; `source` arguments only name the
annotation in error messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .transforms import crop, pad_bottom_right, resize_labels


@dataclass
class MaskTarget:
    """Binary masks `(n, H, W)` with their class labels `(n,)` and crowd flags `(n,)` for one image."""

    masks: np.ndarray
    labels: np.ndarray
    is_crowd: np.ndarray

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.is_crowd = np.asarray(self.is_crowd, dtype=bool).reshape(-1)
        if self.masks.ndim != 3 or not len(self.masks) == len(self.labels) == len(self.is_crowd):
            raise ValueError(
                f"MaskTarget needs masks (n, H, W), labels (n,) and is_crowd (n,), got shapes "
                f"{self.masks.shape}, {self.labels.shape}, {self.is_crowd.shape}"
            )

    @classmethod
    def empty(cls, height: int, width: int) -> "MaskTarget":
        return cls(np.zeros((0, height, width), bool), np.zeros(0, np.int64), np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> tuple[int, int]:
        return self.masks.shape[1], self.masks.shape[2]

    def select(self, keep: np.ndarray) -> "MaskTarget":
        """The segments where `keep` (bool `(n,)` or indices) is set."""
        return MaskTarget(self.masks[keep], self.labels[keep], self.is_crowd[keep])

    def non_empty(self) -> "MaskTarget":
        """Drop segments without pixels (e.g. cropped away)."""
        return self.select(self.masks.any(axis=(1, 2)))

    def resized(self, size: tuple[int, int]) -> "MaskTarget":
        """Masks resized with nearest neighbour to `size = (h, w)`, as the image's label map would be; segments that
        vanish are dropped. The target itself when it already has that size."""
        if self.size == tuple(size):
            return self
        return MaskTarget(resize_labels(self.masks, size), self.labels, self.is_crowd).non_empty()

    def cropped(self, top: int, left: int, height: int, width: int) -> "MaskTarget":
        """The `height x width` window at (`top`, `left`); segments cropped away are dropped."""
        return MaskTarget(crop(self.masks, top, left, height, width), self.labels, self.is_crowd).non_empty()

    def padded(self, size: tuple[int, int]) -> "MaskTarget":
        """Masks zero-padded at the bottom and right to `size = (h, w)`: the padding belongs to no segment."""
        return MaskTarget(pad_bottom_right(self.masks, size), self.labels, self.is_crowd)

    def semantic_map(self, ignore_index: int = 255) -> np.ndarray:
        """Class index per pixel `(H, W)`, `ignore_index` where no mask is set (later masks win on overlaps)."""
        out = np.full(self.size, ignore_index, dtype=np.int64)
        for mask, label in zip(self.masks, self.labels):
            out[mask] = label
        return out


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG `(H, W, 3)` uint8 to segment ids `(H, W)` int64: `R + 256 G + 256^2 B`."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"a panoptic PNG must be RGB (H, W, 3), got shape {rgb.shape}")
    channels = [rgb[..., channel].astype(np.int64) for channel in range(3)]  # no (H, W, 3) int64 temporary
    return channels[0] + (channels[1] << 8) + (channels[2] << 16)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids `(H, W)` to the COCO panoptic RGB encoding `(H, W, 3)` uint8."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must be in [0, 256^3), got range [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def _masks_for_ids(id_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`(n, H, W)` bool masks `id_map == ids[i]`."""
    return id_map[None] == np.asarray(ids).reshape(-1, 1, 1)


def _present_ids(id_map: np.ndarray, ignore_index: int | None, what: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """`id_map` as a 2-D array (else an error naming `what` and `source`) and its sorted values other than
    `ignore_index`."""
    id_map = np.asarray(id_map)
    if id_map.ndim != 2:
        raise ValueError(f"{source}: {what} must be 2-D (H, W), got shape {id_map.shape}")
    if id_map.size:  # every value starts a run in some row: label maps are piecewise constant, few starts to sort
        starts = id_map[:, 1:][id_map[:, 1:] != id_map[:, :-1]]
        ids = np.unique(np.concatenate([id_map[:, 0], starts]))
    else:
        ids = np.unique(id_map)
    if ignore_index is not None:
        ids = ids[ids != ignore_index]
    return id_map, ids


def check_class_ids(labels: np.ndarray, num_labels: int | None, source: str, note: str = "") -> None:
    """Class ids must lie in `[0, num_labels)` (only be non-negative when `num_labels` is None); the error names
    `source`, the first offending ids and `note`."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    outside = (labels < 0) | (labels >= num_labels) if num_labels is not None else labels < 0
    if outside.any():
        bad = np.unique(labels[outside])[:10].tolist()
        raise ValueError(f"{source}: class ids {bad} are outside [0, {num_labels}){note}")


def panoptic_target(
    id_map: np.ndarray,
    segments_info: Sequence[Mapping],
    category_to_label: Mapping[int, int] | None = None,
    source: str = "panoptic annotation",
    absent: list[int] | None = None,
) -> MaskTarget:
    """A `MaskTarget` from a panoptic segment-id map `(H, W)` (0 = void; use `rgb_to_id` on COCO PNGs) and its
    `segments_info` (`[{"id", "category_id", "iscrowd"?}]`). `category_to_label` maps dataset category ids to
    contiguous labels (identity when None). Ids in the map missing from `segments_info`, and categories missing from
    `category_to_label`, are errors naming `source`; segments without pixels are dropped (their ids are appended to
    `absent` when given, for the caller to report)."""
    id_map, present = _present_ids(id_map, 0, "the segment-id map", source)
    by_id: dict[int, Mapping] = {}
    for segment in segments_info:
        if "id" not in segment or "category_id" not in segment:
            raise ValueError(f"{source}: every segments_info entry needs 'id' and 'category_id', got {dict(segment)}")
        by_id[int(segment["id"])] = segment
    unknown = sorted(int(i) for i in present if int(i) not in by_id)
    if unknown:
        raise ValueError(f"{source}: segment ids {unknown[:10]} in the PNG are not in segments_info")
    if absent is not None:
        absent.extend(sorted(set(by_id) - {int(i) for i in present}))
    labels, crowd = [], []
    for segment_id in present:
        segment = by_id[int(segment_id)]
        category = int(segment["category_id"])
        if category_to_label is not None and category not in category_to_label:
            raise ValueError(f"{source}: segment {int(segment_id)} has category_id {category}, not in the categories")
        labels.append(category if category_to_label is None else category_to_label[category])
        crowd.append(bool(segment.get("iscrowd", 0)))
    return MaskTarget(_masks_for_ids(id_map, present), np.asarray(labels, np.int64), np.asarray(crowd, bool))


def semantic_target(
    semantic_map: np.ndarray, ignore_index: int | None = 255, num_labels: int | None = None, source: str = "semantic map"
) -> MaskTarget:
    """One mask per class present in a class-index map `(H, W)`; `ignore_index` pixels belong to no mask. Classes
    outside `[0, num_labels)` (when given) are an error naming `source`."""
    semantic_map, classes = _present_ids(semantic_map, ignore_index, "a semantic map", source)
    check_class_ids(classes, num_labels, source, note=f" (ignore_index={ignore_index})")
    return MaskTarget(_masks_for_ids(semantic_map, classes), classes.astype(np.int64), np.zeros(len(classes), bool))


def instance_target(
    instance_map: np.ndarray,
    instance_id_to_semantic_id: Mapping[int, int],
    ignore_index: int | None = None,
    num_labels: int | None = None,
    source: str = "instance map",
) -> MaskTarget:
    """One mask per instance id of an instance-id map `(H, W)`, labelled by `instance_id_to_semantic_id`; ids equal
    to `ignore_index` belong to no mask. An id without a class, or a class outside `[0, num_labels)`, is an error."""
    instance_map, ids = _present_ids(instance_map, ignore_index, "an instance map", source)
    mapping = {int(k): int(v) for k, v in instance_id_to_semantic_id.items()}
    missing = [int(i) for i in ids if int(i) not in mapping]
    if missing:
        raise ValueError(f"{source}: instance ids {missing[:10]} have no entry in instance_id_to_semantic_id")
    labels = np.asarray([mapping[int(i)] for i in ids], np.int64)
    check_class_ids(labels, num_labels, source)
    return MaskTarget(_masks_for_ids(instance_map, ids), labels, np.zeros(len(ids), bool))
