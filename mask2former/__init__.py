"""Mask2Former (Cheng et al., CVPR 2022) in plain PyTorch: exact, fast, small."""
from .config import Mask2FormerConfig, ResNetConfig, SwinConfig
from .model import (
    Mask2FormerForUniversalSegmentation,
    Mask2FormerModel,
    Mask2FormerPreTrainedModel,
    build_model,
)
from .modeling_outputs import Mask2FormerForUniversalSegmentationOutput, Mask2FormerModelOutput, Mask2FormerOutput
from .processor import AutoImageProcessor, Mask2FormerImageProcessor
from .segmenter import SegmentationResult, Segmenter

__version__ = "0.1.0"

__all__ = [
    "Mask2FormerConfig",
    "SwinConfig",
    "ResNetConfig",
    "Mask2FormerForUniversalSegmentation",
    "Mask2FormerModel",
    "Mask2FormerPreTrainedModel",
    "Mask2FormerForUniversalSegmentationOutput",
    "Mask2FormerModelOutput",
    "Mask2FormerOutput",
    "build_model",
    "AutoImageProcessor",
    "Mask2FormerImageProcessor",
    "Segmenter",
    "SegmentationResult",
]
