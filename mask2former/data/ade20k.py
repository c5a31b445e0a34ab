"""ADE20K SceneParsing (150 classes) as released::

    ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg
    ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png

Labels are reduced as the original does: 0 ("other") becomes 255 and every class id drops by one.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .datasets import (
    IGNORE_VALUE,
    ClassInfo,
    DatasetError,
    default_color,
    list_images,
    read_image_and_label,
    SegmentationDataset,
)

NUM_CLASSES = 150
_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def reduce_zero_label(raw: np.ndarray, num_classes: int = NUM_CLASSES, path: str = "") -> np.ndarray:
    """0 -> 255 (ignore), k -> k - 1; values above ``num_classes`` are an error."""
    bad = (raw < 0) | (raw > num_classes)
    if bad.any():
        raise DatasetError(f"{path}: label values {np.unique(raw[bad])[:5].tolist()} are outside 0..{num_classes}")
    return np.where(raw == 0, IGNORE_VALUE, raw - 1).astype(np.int64)


class ADE20KSemantic(SegmentationDataset):
    """``root`` may be the ``ADEChallengeData2016`` folder itself or the folder holding it."""

    def __init__(self, root: str | os.PathLike, split: str = "train", num_classes: int = NUM_CLASSES) -> None:
        root = os.fspath(root)
        if os.path.isdir(os.path.join(root, "ADEChallengeData2016")):
            root = os.path.join(root, "ADEChallengeData2016")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, not {split!r}")
        self.root = root
        self.task = "semantic"
        self.ignore_value = IGNORE_VALUE
        # Names are not bundled: a model's config.json carries them (id2label).
        self.classes = [ClassInfo(f"class_{i}", default_color(i)) for i in range(num_classes)]
        label_dir = os.path.join(root, "annotations", _SPLITS[split])
        self.items = []
        for image in list_images(os.path.join(root, "images", _SPLITS[split])):
            label = os.path.join(label_dir, os.path.splitext(os.path.basename(image))[0] + ".png")
            if not os.path.isfile(label):
                raise DatasetError(f"{image}: no label file {label}")
            self.items.append((image, label))

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.items[index]
        image, raw = read_image_and_label(image_path, label_path)
        return {"file_name": image_path, "image": image, "sem_seg": reduce_zero_label(raw, self.num_classes, label_path)}
