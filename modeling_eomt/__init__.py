"""EoMT (Encoder-only Mask Transformer) as a transformers model.

Importing this package registers `EoMTConfig` (model type `eomt_vit`) with `AutoConfig`, `EoMTModel` with `AutoModel`
and `EoMTForUniversalSegmentation` with `AutoModelForUniversalSegmentation` (and `AutoModelForImageSegmentation`), and
`image_processing.EoMTImageProcessor` with `AutoImageProcessor`, so that `pipeline("image-segmentation", model=DIR)`
works after `import modeling_eomt`. The dependency is one-way: `image_processing` never imports this package.
transformers' own `eomt` / `eomt_dinov3` model types are left untouched.

Every folder that `save_pretrained` writes also carries the remote code of the model and processor (`auto_map`), so
that it loads with `trust_remote_code=True` where this package is not installed, and a model card (`README.md`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageSegmentation, AutoModelForUniversalSegmentation

# From its module: without torchvision some transformers versions (5.13 to 5.17) export a placeholder that refuses every
# use, the real class included registration.
from transformers.models.auto.image_processing_auto import AutoImageProcessor

from image_processing.image_processing_eomt import EoMTImageProcessor

from .configuration_eomt import SIZE_PRESETS, EoMTConfig
from .modeling_eomt import (
    EoMTForUniversalSegmentation,
    EoMTForUniversalSegmentationOutput,
    EoMTModel,
    EoMTModelOutput,
    EoMTPreTrainedModel,
)

AutoConfig.register(EoMTConfig.model_type, EoMTConfig, exist_ok=True)
AutoModel.register(EoMTConfig, EoMTModel, exist_ok=True)
AutoModelForUniversalSegmentation.register(EoMTConfig, EoMTForUniversalSegmentation, exist_ok=True)
AutoModelForImageSegmentation.register(EoMTConfig, EoMTForUniversalSegmentation, exist_ok=True)
AutoImageProcessor.register(
    EoMTConfig, image_processor_classes={"pil": EoMTImageProcessor, "torchvision": EoMTImageProcessor}, exist_ok=True
)

__all__ = [
    "SIZE_PRESETS",
    "EoMTConfig",
    "EoMTModel",
    "EoMTModelOutput",
    "EoMTForUniversalSegmentation",
    "EoMTForUniversalSegmentationOutput",
    "EoMTPreTrainedModel",
]
