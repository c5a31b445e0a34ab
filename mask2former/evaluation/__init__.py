"""Streaming evaluators matching the official metrics (detectron2 / cityscapesscripts
pixel metrics, panopticapi PQ, pycocotools mask AP, cityscapesscripts instance AP)."""
from .cityscapes_instance import CityscapesInstanceEvaluator
from .confusion import InstanceConfusion, save_confusion_png
from .instance import InstanceEvaluator, encode_masks
from .panoptic import (
    PanopticEvaluator,
    evaluate_coco_panoptic,
    id2rgb,
    iter_coco_panoptic,
    read_panoptic_png,
    rgb2id,
)
from .semantic import SemanticEvaluator

__all__ = [
    "CityscapesInstanceEvaluator",
    "InstanceConfusion",
    "InstanceEvaluator",
    "PanopticEvaluator",
    "SemanticEvaluator",
    "encode_masks",
    "evaluate_coco_panoptic",
    "id2rgb",
    "iter_coco_panoptic",
    "read_panoptic_png",
    "rgb2id",
    "save_confusion_png",
]
