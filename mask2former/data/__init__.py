"""Datasets in their released on-disk formats, the original's augmentations, loss targets,
and a synthetic scene generator."""
from .ade20k import ADE20KSemantic
from .cityscapes import CityscapesPanoptic, CityscapesSemantic, cityscapes_labels
from .coco import CocoInstance, CocoPanoptic, rgb2id
from .datasets import IGNORE_VALUE, ClassInfo, DatasetError, build_dataset, load_class_file
from .folder import FolderDataset
from .transforms import (
    AugmentedDataset,
    ColorAugSSD,
    Compose,
    FixedSizeCrop,
    PadToSize,
    RandomCrop,
    RandomFlip,
    ResizeScale,
    ResizeShortestEdge,
    ade20k_augmentation,
    build_targets,
    cityscapes_augmentation,
    collate,
    lsj_augmentation,
    scale_choices,
    semantic_augmentation,
)

__all__ = [
    "ADE20KSemantic", "AugmentedDataset", "CityscapesPanoptic", "CityscapesSemantic", "ClassInfo",
    "CocoInstance", "CocoPanoptic", "ColorAugSSD", "Compose", "DatasetError", "FixedSizeCrop",
    "FolderDataset", "IGNORE_VALUE", "PadToSize", "RandomCrop", "RandomFlip", "ResizeScale",
    "ResizeShortestEdge", "ade20k_augmentation", "build_dataset", "build_targets",
    "cityscapes_augmentation", "cityscapes_labels", "collate", "load_class_file", "lsj_augmentation",
    "rgb2id", "scale_choices", "semantic_augmentation",
]
