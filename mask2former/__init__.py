"""Mask2Former (Cheng et al., CVPR 2022) in plain PyTorch: exact, fast, small."""
import os as _os
import sys as _sys

# OpenMP threads waiting for work sleep instead of spinning. On a busy machine (other
# processes, DataLoader workers, a second torchrun rank) spinning threads take the cores the
# working ones need: 2-3x faster there (docs/performance.md).
# It only takes effect before torch is loaded, and never overrides the user's own setting.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .config import Mask2FormerConfig, ResNetConfig, SwinConfig
from .model import Mask2FormerForUniversalSegmentation, Mask2FormerOutput, build_model
from .processor import AutoImageProcessor, Mask2FormerImageProcessor
from .segmenter import SegmentationResult, Segmenter

__version__ = "0.1.0"

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
]
