"""Streaming evaluation metrics whose memory does not grow with the number of images (except mask AP, which keeps
one RLE per mask): panoptic quality, instance mask AP and semantic mIoU, all in percent, summed across processes
when `torch.distributed` runs. `load_metric(name)` gives the same metrics as `evaluate` modules."""

from .mask_ap import MaskAP, encode_masks
from .mean_iou import MeanIoU
from .modules import EVALUATE_MODULES, load_metric
from .panoptic_quality import PanopticQuality

__all__ = ["EVALUATE_MODULES", "MaskAP", "MeanIoU", "PanopticQuality", "encode_masks", "load_metric"]
