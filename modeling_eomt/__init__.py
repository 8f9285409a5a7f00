"""EoMT (Encoder-only Mask Transformer) as a transformers model.

Importing this package registers `EoMTConfig` (model type `eomt_vit`) with `AutoConfig`, `EoMTModel` with `AutoModel`
and `EoMTForUniversalSegmentation` with `AutoModelForUniversalSegmentation` (and `AutoModelForImageSegmentation`).
transformers' own `eomt` / `eomt_dinov3` model types are left untouched.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageSegmentation,
    AutoModelForUniversalSegmentation,
)

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

__all__ = [
    "SIZE_PRESETS",
    "EoMTConfig",
    "EoMTModel",
    "EoMTModelOutput",
    "EoMTForUniversalSegmentation",
    "EoMTForUniversalSegmentationOutput",
    "EoMTPreTrainedModel",
]
