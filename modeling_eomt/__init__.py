"""EoMT (Encoder-only Mask Transformer) as a transformers model.

Importing this package registers `EoMTConfig` (model type `eomt_vit`) with `AutoConfig`, `EoMTModel` with `AutoModel`
and `EoMTForUniversalSegmentation` with `AutoModelForUniversalSegmentation` (and `AutoModelForImageSegmentation`), and
`image_processing.EoMTImageProcessor` with `AutoImageProcessor`, so that `pipeline("image-segmentation", model=DIR)`
works after `import modeling_eomt`. The dependency is one-way: `image_processing` never imports this package.
transformers' own `eomt` / `eomt_dinov3` model types are left untouched.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageSegmentation, AutoModelForUniversalSegmentation
# From its module: without torchvision, transformers 5.17's top-level `AutoImageProcessor` is a placeholder that fails.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES

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
# The image-segmentation pipeline checks the model's class name against this table only (registered classes are not
# consulted) and logs an error otherwise; the entry is inert for the auto classes (its model type has no built-in config).
MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES.setdefault(EoMTConfig.model_type, EoMTForUniversalSegmentation.__name__)
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
