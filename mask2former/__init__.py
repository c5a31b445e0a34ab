"""Mask2Former (Cheng et al., CVPR 2022) in plain PyTorch: exact, fast, small."""
from .config import Mask2FormerConfig, ResNetConfig, SwinConfig
from .model import Mask2FormerForUniversalSegmentation, Mask2FormerOutput, build_model
from .processor import AutoImageProcessor, Mask2FormerImageProcessor
from .segmenter import SegmentationError, SegmentationResult, Segmenter

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (a test checks)

__all__ = [
    "Mask2FormerConfig",
    "SwinConfig",
    "ResNetConfig",
    "Mask2FormerForUniversalSegmentation",
    "Mask2FormerOutput",
    "build_model",
    "AutoImageProcessor",
    "Mask2FormerImageProcessor",
    "Segmenter",
    "SegmentationResult",
    "SegmentationError",
]
