"""`EoMTImageProcessor`: images (and segmentation annotations) in, model inputs out; model outputs in, segmentations out.

Geometry, as the authors' models expect it (`size = {"shortest_edge": S, "longest_edge": L}`):

- panoptic / instance (`do_split_image=False`): the longer side is resized to `L` (or `S` when `L` is None), both
  sides rounded, then the image is zero-padded at the bottom and right to the `L x L` square (`do_pad=True`);
- semantic (`do_split_image=True`): the shorter side is resized to `S` (rounded) and the image is cut into `S x S`
  windows along its longer side, overlapping evenly; `patch_offsets` holds `(image_index, start, end)` per window.

Differences from transformers' `EomtImageProcessor`: sizes are rounded like the authors' (transformers truncates, and
for very elongated images keeps the original size); `do_pad=True` is the default (transformers' default `False` gives
non-square inputs); without windows `shortest_edge` plays no part when `longest_edge` is set (transformers first
scales the shorter side to `S`; the two agree for the authors' square sizes); windows ignore `longest_edge`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import logging

from .hub import EoMTImageProcessorHubMixin
from .inputs import ImageInput, as_image_list, to_label_array, to_rgb_array
from .post_processing import post_process_instance, post_process_panoptic, post_process_semantic
from .post_processing.checks import _check_thresholds
from .targets import MaskTarget, check_class_ids, instance_target, panoptic_target, rgb_to_id, semantic_target
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop,
    longest_side_size,
    normalize_image,
    pad_bottom_right,
    resize_image,
    shortest_side_size,
    sliding_windows,
)

logger = logging.get_logger(__name__)

_RESAMPLE_NAMES = {Image.NEAREST: "nearest", Image.BILINEAR: "bilinear", Image.BICUBIC: "bicubic"}
# Keys of transformers' image processor configs that have no meaning here (read and dropped silently).
_IGNORED_CONFIG_KEYS = {
    "image_processor_type", "processor_class", "feature_extractor_type", "default_to_square", "do_convert_rgb",
    "data_format", "input_data_format", "device", "return_tensors", "crop_size", "do_center_crop", "pad_size",
    "disable_grouping", "image_seq_length", "backend", "auto_map", "_processor_class",
}  # fmt: skip


class EoMTImageProcessorKwargs(TypedDict, total=False):
    """The processor's settings; each can be overridden per call (`processor(images, do_pad=False)`)."""

    do_resize: bool
    size: int | dict[str, int | None]
    resample: int
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: Sequence[float]
    image_std: Sequence[float]
    do_split_image: bool
    do_pad: bool
    ignore_index: int | None
    reduce_labels: bool
    num_labels: int | None
    stuff_classes: list[int] | None


def _size_dict(size: int | Mapping | None) -> dict[str, int | None]:
    """`{"shortest_edge": S, "longest_edge": L or None}` from an int (both edges) or such a dict."""
    if size is None:
        return {"shortest_edge": 640, "longest_edge": 640}
    if isinstance(size, int) and not isinstance(size, bool):
        edges = {"shortest_edge": size, "longest_edge": size}
    elif isinstance(size, Mapping) and size.get("shortest_edge"):
        longest = size.get("longest_edge")
        edges = {"shortest_edge": int(size["shortest_edge"]), "longest_edge": None if longest is None else int(longest)}
    else:
        raise ValueError(f"size must be an int or a dict with 'shortest_edge' (and optionally 'longest_edge'), got "
                         f"{size!r}")  # fmt: skip
    if any(edge is not None and edge < 1 for edge in edges.values()):
        raise ValueError(f"size must give positive edges, got {size!r}")
    return edges


def _output(outputs: Any, name: str) -> Any:
    """A field of model outputs given as a `ModelOutput`, a dict or any object with attributes."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


class EoMTImageProcessor(EoMTImageProcessorHubMixin, BaseImageProcessor):
    r"""
    Pre- and post-processing for [`EoMTForUniversalSegmentation`] (saved as `preprocessor_config.json`).

    Args:
        do_resize (`bool`, defaults to `True`): resize as described in the module docstring (else keep the size).
        size (`int` or `dict`, defaults to `{"shortest_edge": 640, "longest_edge": 640}`): `longest_edge` is the side
            of the square model input (panoptic / instance); `shortest_edge` the window side (semantic, with
            `do_split_image`). An int sets both.
        resample (`int`, defaults to `PIL.Image.BILINEAR`): image resampling filter (nearest, bilinear or bicubic);
            label maps are always resized with nearest neighbour.
        do_rescale (`bool`, defaults to `True`), rescale_factor (`float`, defaults to `1 / 255`): multiply pixel
            values (on the 0-255 scale, see `image_processing.inputs`) by `rescale_factor`.
        do_normalize (`bool`, defaults to `True`), image_mean, image_std (ImageNet's): `(x - mean) / std`.
        do_split_image (`bool`, defaults to `False`): sliding windows for semantic segmentation.
        do_pad (`bool`, defaults to `True`): zero-pad (before normalisation) to the square model input.
        ignore_index (`int` or None, defaults to 255): value of void pixels in semantic maps and of the void id in
            instance maps; they belong to no mask.
        reduce_labels (`bool`, defaults to `False`): maps hold class `c + 1` and 0 is void (ADE20K's convention):
            0 becomes void and every other value is lowered by one. transformers' `ignore_index=i` means
            `reduce_labels=True, ignore_index=i`; its configs are translated on loading.
        num_labels (`int` or None): number of classes; class ids of targets must be in `[0, num_labels)` and model
            outputs must have `num_labels + 1` classes. Unchecked when None.
        stuff_classes (`list[int]` or None): the classes whose segments panoptic post-processing fuses into one per
            image when the call names none (so that the image-segmentation pipeline fuses them too).
        threshold (`float`, defaults to 0.8), overlap_mask_area_threshold (`float`, defaults to 0.8): the authors'
            class-score threshold of panoptic and instance post-processing, and the share of its mask a panoptic
            segment must keep after overlaps are resolved, used when a call gives none. `eomt train` chooses them on
            its evaluation split (`training.evaluation.choose_postprocessing`). The image-segmentation pipeline
            passes its own (0.9 and 0.5) unless given others.

    Calling the processor returns a `BatchFeature` with `pixel_values (N, 3, H, W)` (one row per image, or per
    window), `original_sizes (B, 2)` and `resized_sizes (B, 2)` (the image size after resizing: the valid top-left
    region of its padded input, or the image that the windows tile), `patch_offsets` (with windows: one
    `(image_index, start, end)` tensor per window, transformers' format) and, given annotations, per row
    `mask_labels (n, H, W)` float, `class_labels (n,)` int64 and `is_crowd (n,)` bool.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = EoMTImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: int | dict[str, int | None] | None = None,
        resample: int = Image.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        do_split_image: bool = False,
        do_pad: bool = True,
        ignore_index: int | None = 255,
        reduce_labels: bool = False,
        num_labels: int | None = None,
        stuff_classes: Sequence[int] | None = None,
        threshold: float = 0.8,
        overlap_mask_area_threshold: float = 0.8,
        **kwargs,
    ) -> None:
        unknown = sorted(key for key in kwargs if key not in _IGNORED_CONFIG_KEYS)
        if unknown:
            logger.warning(f"EoMTImageProcessor ignores unknown settings {unknown}")
        super().__init__()
        self.do_resize = bool(do_resize)
        self.size = _size_dict(size)
        self.resample = int(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = [float(value) for value in image_mean]
        self.image_std = [float(value) for value in image_std]
        self.do_split_image = bool(do_split_image)
        self.do_pad = bool(do_pad)
        self.ignore_index = ignore_index
        self.reduce_labels = bool(reduce_labels)
        self.num_labels = num_labels
        self.stuff_classes = None if stuff_classes is None else [int(label) for label in stuff_classes]
        _check_thresholds(threshold=threshold, overlap_mask_area_threshold=overlap_mask_area_threshold)
        self.threshold = float(threshold)
        self.overlap_mask_area_threshold = float(overlap_mask_area_threshold)
        self._check_settings(vars(self))

    @staticmethod
    def _check_settings(settings: Mapping[str, Any]) -> None:
        if settings["resample"] not in _RESAMPLE_NAMES:
            raise ValueError(f"resample must be PIL nearest (0), bilinear (2) or bicubic (3), got {settings['resample']}")
        if not len(settings["image_mean"]) == len(settings["image_std"]) == 3:
            raise ValueError(f"image_mean and image_std need 3 values, got {settings['image_mean']}, {settings['image_std']}")
        if settings["reduce_labels"] and settings["ignore_index"] is None:
            raise ValueError("reduce_labels=True needs an ignore_index for the pixels labelled 0")
        if settings["num_labels"] is not None and settings["num_labels"] <= 0:
            raise ValueError(f"num_labels must be positive, got {settings['num_labels']}")

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs):
        """Also reads transformers' own EoMT configs (`image_processor_type` `EomtImageProcessor*`), translating
        their `ignore_index` and defaults (`do_pad=False`, no label reduction)."""
        config = dict(image_processor_dict)
        if str(config.get("image_processor_type", "")).startswith("EomtImageProcessor"):
            config.setdefault("do_pad", False)
            config["ignore_index"] = config.get("ignore_index")
            config["reduce_labels"] = config["ignore_index"] is not None
        return super().from_dict(config, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        config = {key: value for key, value in vars(self).items() if not key.startswith("_")}
        config["image_processor_type"] = type(self).__name__
        return config

    def to_transformers_eomt_dict(self) -> dict[str, Any]:
        """These settings as a config of transformers' own `EomtImageProcessor` (`preprocessor_config.json` of a
        checkpoint in transformers' EoMT format; `from_dict` reads it back). transformers' `ignore_index` means label
        reduction with that void value."""
        names = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
                 "image_std", "do_split_image", "do_pad")  # fmt: skip
        config = {name: getattr(self, name) for name in names}
        config["ignore_index"] = self.ignore_index if self.reduce_labels else None
        config["image_processor_type"] = "EomtImageProcessor"
        return config

    # ------------------------------------------------------------------------------------------------------------
    # Geometry
    # ------------------------------------------------------------------------------------------------------------

    def _settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(EoMTImageProcessorKwargs.__annotations__))
        if unknown:
            raise TypeError(f"EoMTImageProcessor got unexpected arguments {unknown}")
        settings = {key: getattr(self, key) for key in EoMTImageProcessorKwargs.__annotations__}
        settings.update(overrides)
        settings["size"] = _size_dict(settings["size"])
        self._check_settings(settings)
        return settings

    @staticmethod
    def _input_side(size: Mapping[str, int | None]) -> int:
        """Side of the square model input without windows."""
        return size["longest_edge"] or size["shortest_edge"]

    def resized_size(self, original_size: Sequence[int], **overrides) -> tuple[int, int]:
        """`(h, w)` of an image of `original_size = (H, W)` after resizing (before padding or windows)."""
        return self._resized_size(original_size, self._settings(overrides))

    def _resized_size(self, original_size: Sequence[int], settings: Mapping[str, Any]) -> tuple[int, int]:
        height, width = int(original_size[0]), int(original_size[1])
        if not settings["do_resize"]:
            return height, width
        if settings["do_split_image"]:
            return shortest_side_size(height, width, settings["size"]["shortest_edge"])
        return longest_side_size(height, width, self._input_side(settings["size"]))

    # ------------------------------------------------------------------------------------------------------------
    # Pre-processing
    # ------------------------------------------------------------------------------------------------------------

    def preprocess(
        self,
        images: ImageInput | Sequence[ImageInput],
        segmentation_maps: Any = None,
        instance_id_to_semantic_id: Mapping[int, int] | Sequence[Mapping[int, int]] | None = None,
        segments_info: Sequence[Mapping] | Sequence[Sequence[Mapping]] | None = None,
        category_to_label: Mapping[int, int] | None = None,
        return_tensors: str | None = "pt",
        input_data_format: str | None = None,
        **overrides,
    ) -> BatchFeature:
        """
        Args:
            images: one image or a list (or a 4-D array / tensor) of images; see `image_processing.inputs`.
            segmentation_maps (optional): one annotation per image, at the image's size: a semantic map `(H, W)` of
                class ids; an instance map `(H, W)` of instance ids with `instance_id_to_semantic_id` (one dict for
                all images, or one per image); a COCO panoptic PNG (RGB-encoded ids, or an `(H, W)` id map) with
                `segments_info` (a list of `{"id", "category_id", "iscrowd"}` per image) and optionally
                `category_to_label` (dataset category id -> contiguous class); or a ready `MaskTarget`. Paths, PIL
                images, numpy arrays and tensors are accepted.
            return_tensors: `"pt"` (default) stacks `pixel_values` into one tensor, `"np"` into a numpy array,
                None leaves a list of tensors (images of different sizes without padding).
            input_data_format: `"channels_first"` or `"channels_last"` for arrays and tensors (inferred if None).
            **overrides: any setting of the processor, for this call only.
        """
        settings = self._settings(overrides)
        images = as_image_list(images)
        maps = None if segmentation_maps is None else as_image_list(segmentation_maps, "segmentation_maps")
        if maps is not None and len(maps) != len(images):
            raise ValueError(f"got {len(maps)} segmentation_maps for {len(images)} images")
        segments_info = _per_image("segments_info", segments_info, len(images))
        instance_id_to_semantic_id = _per_image("instance_id_to_semantic_id", instance_id_to_semantic_id, len(images))

        pixel_values, offsets, targets, original_sizes, resized_sizes = [], [], [], [], []
        for index, image in enumerate(images):
            rgb = to_rgb_array(image, input_data_format, source=f"images[{index}]")
            original_size = rgb.shape[:2]
            resized = self._resized_size(original_size, settings)
            target = None
            if maps is not None:
                target = self._encode_target(
                    maps[index], index, original_size, settings, instance_id_to_semantic_id, segments_info, category_to_label
                )
                target = target.resized(resized)
            rgb = resize_image(rgb, resized, _RESAMPLE_NAMES[settings["resample"]])
            for array, mask_target, offset in self._layout(rgb, target, index, settings):
                pixel_values.append(self._normalize(array, settings))
                targets.append(mask_target)
                if offset is not None:
                    offsets.append(torch.tensor(offset, dtype=torch.long))
            original_sizes.append(original_size)
            resized_sizes.append(resized)

        data: dict[str, Any] = {
            "pixel_values": _stack(pixel_values, return_tensors),
            "original_sizes": torch.tensor(original_sizes, dtype=torch.long),
            "resized_sizes": torch.tensor(resized_sizes, dtype=torch.long),
        }
        if settings["do_split_image"]:
            data["patch_offsets"] = offsets
        if maps is not None:
            data["mask_labels"] = [torch.from_numpy(target.masks).float() for target in targets]
            data["class_labels"] = [torch.from_numpy(target.labels) for target in targets]
            data["is_crowd"] = [torch.from_numpy(target.is_crowd) for target in targets]
        return BatchFeature(data=data)

    def _layout(
        self, image: np.ndarray, target: MaskTarget | None, index: int, settings: Mapping[str, Any]
    ) -> Iterator[tuple[np.ndarray, MaskTarget | None, tuple[int, int, int] | None]]:
        """`(image, target, patch_offset)` rows of the model input: windows, the padded image, or the image."""
        height, width = image.shape[:2]
        if settings["do_split_image"]:
            window = settings["size"]["shortest_edge"]
            if min(height, width) != window:
                raise ValueError(f"images[{index}]: sliding windows need the shorter side to be {window}, got "
                                 f"{height}x{width} (keep do_resize=True)")
            along_height = height > width
            for start, end in sliding_windows(max(height, width), window):
                top, left = (start, 0) if along_height else (0, start)
                row = crop(image, top, left, window, window, channels_last=True)
                row_target = None if target is None else target.cropped(top, left, window, window)
                yield row, row_target, (index, start, end)
        elif settings["do_pad"]:
            side = self._input_side(settings["size"])
            if max(height, width) > side:
                raise ValueError(f"images[{index}]: {height}x{width} does not fit the {side}x{side} input "
                                 f"(keep do_resize=True to pad)")
            if target is not None:
                target = target.padded((side, side))
            yield pad_bottom_right(image, (side, side), channels_last=True), target, None
        else:
            yield image, target, None

    @staticmethod
    def _normalize(image: np.ndarray, settings: Mapping[str, Any]) -> torch.Tensor:
        scale = settings["rescale_factor"] if settings["do_rescale"] else 1.0
        if settings["do_normalize"]:
            return normalize_image(image, tuple(settings["image_mean"]), tuple(settings["image_std"]), scale)
        return normalize_image(image, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), scale)

    def _encode_target(
        self,
        annotation: Any,
        index: int,
        image_size: tuple[int, int],
        settings: Mapping[str, Any],
        instance_id_to_semantic_id: Any,
        segments_info: Any,
        category_to_label: Mapping[int, int] | None,
    ) -> MaskTarget:
        """The `MaskTarget` of one annotation at the image's original size."""
        source = f"segmentation_maps[{index}]"
        num_labels, ignore_index = settings["num_labels"], settings["ignore_index"]
        if isinstance(annotation, MaskTarget):
            target = annotation
        elif segments_info is not None:
            array = to_label_array(annotation, source, allow_rgb=True)
            id_map = rgb_to_id(array) if array.ndim == 3 else array
            target = panoptic_target(id_map, segments_info[index], category_to_label, source=source)
        else:
            label_map = to_label_array(annotation, source, allow_rgb=False)
            if instance_id_to_semantic_id is not None:
                mapping = instance_id_to_semantic_id[index]
                if settings["reduce_labels"]:
                    label_map = np.where(label_map == 0, ignore_index, label_map)
                    mapping = {key: value - 1 for key, value in mapping.items() if key != 0}
                target = instance_target(label_map, mapping, ignore_index, num_labels, source=source)
            else:
                if settings["reduce_labels"]:
                    void = label_map == 0 if ignore_index is None else (label_map == 0) | (label_map == ignore_index)
                    label_map = np.where(void, ignore_index, label_map - 1)
                target = semantic_target(label_map, ignore_index, num_labels, source=source)
        if target.size != tuple(image_size):
            raise ValueError(f"{source} is {target.size[0]}x{target.size[1]} but images[{index}] is "
                             f"{image_size[0]}x{image_size[1]} (after its EXIF orientation)")
        if num_labels is not None:
            check_class_ids(target.labels, num_labels, source)
        return target

    # ------------------------------------------------------------------------------------------------------------
    # Post-processing: thin wrappers over `post_processing`, with the geometry of this processor
    # ------------------------------------------------------------------------------------------------------------

    def _logits(self, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        class_logits, mask_logits = _output(outputs, "class_queries_logits"), _output(outputs, "masks_queries_logits")
        if class_logits is None or mask_logits is None:
            raise ValueError("outputs need class_queries_logits and masks_queries_logits (EoMTForUniversalSegmentation)")
        if self.num_labels is not None and class_logits.shape[-1] != self.num_labels + 1:
            raise ValueError(f"the outputs have {class_logits.shape[-1] - 1} classes (+ no object) but the processor "
                             f"was set up for num_labels={self.num_labels}: model and processor do not match")
        return class_logits, mask_logits

    def _geometry(
        self,
        mask_logits: torch.Tensor,
        target_sizes: Sequence[Sequence[int]] | torch.Tensor,
        size: Any,
        original_sizes: Sequence[Sequence[int]] | torch.Tensor | None,
        windows: bool,
    ) -> dict[str, Any]:
        """`input_size`, `valid_sizes` / `resized_sizes` of the pre-processing that produced the outputs, recomputed
        from the original sizes (`original_sizes`, else `target_sizes`) and this processor's settings."""
        if target_sizes is None:
            raise ValueError("target_sizes is required: one (height, width) per image")
        originals = target_sizes if original_sizes is None else original_sizes
        originals = [tuple(int(v) for v in size_) for size_ in (originals.tolist() if torch.is_tensor(originals) else originals)]
        if len(originals) != len(target_sizes):
            raise ValueError(f"original_sizes has {len(originals)} entries but target_sizes has {len(target_sizes)}")
        settings = self._settings({"do_split_image": windows, **({} if size is None else {"size": size})})
        for index, (height, width) in enumerate(originals):
            if height <= 0 or width <= 0:
                raise ValueError(f"target_sizes[{index}] must be a positive (height, width), got {(height, width)}")
        resized = [self._resized_size(original, settings) for original in originals]
        if windows:
            input_size = (settings["size"]["shortest_edge"],) * 2
        elif settings["do_pad"]:
            input_size = (self._input_side(settings["size"]),) * 2
        else:
            input_size = resized[0]
            if any(size_ != input_size for size_ in resized):
                raise ValueError(f"without do_pad a batch has one input size, but these images resize to "
                                 f"{sorted(set(resized))}: the outputs cannot come from one batch of them")
        mask_height, mask_width = mask_logits.shape[-2:]
        if input_size[0] * mask_width != input_size[1] * mask_height:
            raise ValueError(f"mask logits of {mask_height}x{mask_width} cannot come from a {input_size[0]}x{input_size[1]} "
                             f"input: the processor's size / do_pad differ from the pre-processing of these outputs")
        if windows:
            return {"input_size": input_size, "resized_sizes": resized}
        return {"input_size": input_size, "valid_sizes": [(min(h, input_size[0]), min(w, input_size[1])) for h, w in resized]}

    @staticmethod
    def _patch_offsets(outputs: Any, num_rows: int) -> list | None:
        offsets = _output(outputs, "patch_offsets")
        if offsets is None or len(offsets) == 0:
            return None
        if len(offsets) != num_rows:
            raise ValueError(
                f"the outputs hold {num_rows} prediction(s) for {len(offsets)} sliding windows; the image-segmentation "
                f"pipeline cannot batch sliding windows (use batch_size=1)"
            )
        return list(offsets)

    def _no_windows(self, outputs: Any, task: str) -> None:
        offsets = _output(outputs, "patch_offsets")
        if offsets is not None and len(offsets):
            raise ValueError(f"{task} segmentation needs whole images, but these outputs come from sliding windows "
                             f"(do_split_image=True): use post_process_semantic_segmentation (pipeline subtask='semantic')")

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: Sequence[Sequence[int]] | torch.Tensor,
        size: int | dict[str, int | None] | None = None,
        return_segmentation_scores: bool = False,
        original_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """Class id per pixel `(H, W)` (long) for each image, at `target_sizes`; sliding windows (the outputs'
        `patch_offsets`) are averaged where they overlap. With `return_segmentation_scores`, each item is a
        `SemanticSegmentationPostProcessorOutput` with `segmentation` and `segmentation_scores (num_labels, H, W)`.

        `target_sizes` are also taken as the original image sizes unless `original_sizes` (the processor's output
        of that name) is given; `size` overrides the processor's size as in transformers."""
        class_logits, mask_logits = self._logits(outputs)
        offsets = self._patch_offsets(outputs, class_logits.shape[0])
        geometry = self._geometry(mask_logits, target_sizes, size, original_sizes, windows=offsets is not None)
        results = post_process_semantic(
            class_logits, mask_logits, target_sizes, patch_offsets=offsets, return_scores=return_segmentation_scores, **geometry
        )
        if return_segmentation_scores:
            return [SemanticSegmentationPostProcessorOutput(data=result) for result in results]
        return results

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        target_sizes: Sequence[Sequence[int]] | torch.Tensor,
        threshold: float | None = None,
        size: int | dict[str, int | None] | None = None,
        mask_threshold: float | None = None,
        overlap_mask_area_threshold: float | None = None,
        return_binary_maps: bool = False,
        original_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """`{"segmentation": (H, W) long (-1: no instance), "segments_info": [{"id", "label_id", "score"}]}` per
        image, for the queries whose class score is above `threshold` (default: the processor's `threshold`).
        EoMT's instance masks are `logits > 0`: `mask_threshold` and `overlap_mask_area_threshold` are
        accepted (the image-segmentation pipeline passes them), checked to lie in [0, 1] like every threshold, and
        unused. `return_binary_maps` gives the `(I, H, W)` masks instead, overlaps included."""
        unused = {"mask_threshold": mask_threshold, "overlap_mask_area_threshold": overlap_mask_area_threshold}
        _check_thresholds(**{name: value for name, value in unused.items() if value is not None})
        class_logits, mask_logits = self._logits(outputs)
        self._no_windows(outputs, "instance")
        geometry = self._geometry(mask_logits, target_sizes, size, original_sizes, windows=False)
        return post_process_instance(
            class_logits, mask_logits, target_sizes, threshold=self.threshold if threshold is None else threshold,
            return_binary_maps=return_binary_maps, **geometry,
        )

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        target_sizes: Sequence[Sequence[int]] | torch.Tensor,
        threshold: float | None = None,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float | None = None,
        stuff_classes: Sequence[int] | None = None,
        size: int | dict[str, int | None] | None = None,
        label_ids_to_fuse: Sequence[int] | None = None,
        original_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """`{"segmentation": (H, W) long (-1: void), "segments_info": [{"id", "label_id", "score"}]}` per image,
        from the queries whose class score is above `threshold`, keeping the segments that keep at least
        `overlap_mask_area_threshold` of their mask (defaults: the processor's); segments of `stuff_classes` (alias
        `label_ids_to_fuse`; default: the processor's `stuff_classes`) are fused into one per class."""
        if stuff_classes is None and label_ids_to_fuse is None:
            stuff_classes = self.stuff_classes
        class_logits, mask_logits = self._logits(outputs)
        self._no_windows(outputs, "panoptic")
        geometry = self._geometry(mask_logits, target_sizes, size, original_sizes, windows=False)
        return post_process_panoptic(
            class_logits,
            mask_logits,
            target_sizes,
            threshold=self.threshold if threshold is None else threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=self.overlap_mask_area_threshold if overlap_mask_area_threshold is None
            else overlap_mask_area_threshold,
            stuff_classes=stuff_classes,
            label_ids_to_fuse=label_ids_to_fuse,
            **geometry,
        )


def _per_image(name: str, value: Any, count: int) -> list | None:
    """One entry per image: a mapping is shared by all images, a list of segments (`segments_info` of one image)
    is wrapped, and any other list must have one entry per image."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [value] * count
    value = list(value)
    if name == "segments_info" and (not value or isinstance(value[0], Mapping)):
        value = [value]
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries for {count} images (one per image)")
    return value


def _stack(pixel_values: list[torch.Tensor], return_tensors: str | None):
    if return_tensors is None:
        return pixel_values
    shapes = sorted({tuple(row.shape[1:]) for row in pixel_values})
    if len(shapes) > 1:
        raise ValueError(f"cannot stack images of different sizes {shapes} into one tensor: use do_pad=True, or "
                         f"return_tensors=None for a list")
    if return_tensors not in ("pt", "np"):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    stacked = np.stack([row.numpy() for row in pixel_values])  # numpy: no intra-op threads for a plain copy
    return stacked if return_tensors == "np" else torch.from_numpy(stacked)
