"""Cityscapes as released (``leftImg8bit`` + ``gtFine``)::

    ROOT/leftImg8bit/{split}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    ROOT/gtFine/{split}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png       (semantic)
    ROOT/gtFine/{split}/CITY/CITY_SEQ_FRAME_gtFine_instanceIds.png    (panoptic / instance)

Label ids are mapped to the 19 train ids on the fly, so ``createTrainIdLabelImgs`` need not be run.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from .datasets import (
    IGNORE_VALUE,
    check_same_size,
    ClassInfo,
    DatasetError,
    list_images,
    read_image,
    read_image_and_label,
    read_label,
    SegmentationDataset,
)


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


# The official label table (cityscapesscripts/helpers/labels.py), used when that package is absent.
# (name, id, trainId, hasInstances, ignoreInEval, colour); "license plate" (id -1) never occurs in PNGs.
_TABLE = [
    ("unlabeled", 0, 255, 0, 1, (0, 0, 0)), ("ego vehicle", 1, 255, 0, 1, (0, 0, 0)),
    ("rectification border", 2, 255, 0, 1, (0, 0, 0)), ("out of roi", 3, 255, 0, 1, (0, 0, 0)),
    ("static", 4, 255, 0, 1, (0, 0, 0)), ("dynamic", 5, 255, 0, 1, (111, 74, 0)),
    ("ground", 6, 255, 0, 1, (81, 0, 81)), ("road", 7, 0, 0, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, 0, 0, (244, 35, 232)), ("parking", 9, 255, 0, 1, (250, 170, 160)),
    ("rail track", 10, 255, 0, 1, (230, 150, 140)), ("building", 11, 2, 0, 0, (70, 70, 70)),
    ("wall", 12, 3, 0, 0, (102, 102, 156)), ("fence", 13, 4, 0, 0, (190, 153, 153)),
    ("guard rail", 14, 255, 0, 1, (180, 165, 180)), ("bridge", 15, 255, 0, 1, (150, 100, 100)),
    ("tunnel", 16, 255, 0, 1, (150, 120, 90)), ("pole", 17, 5, 0, 0, (153, 153, 153)),
    ("polegroup", 18, 255, 0, 1, (153, 153, 153)), ("traffic light", 19, 6, 0, 0, (250, 170, 30)),
    ("traffic sign", 20, 7, 0, 0, (220, 220, 0)), ("vegetation", 21, 8, 0, 0, (107, 142, 35)),
    ("terrain", 22, 9, 0, 0, (152, 251, 152)), ("sky", 23, 10, 0, 0, (70, 130, 180)),
    ("person", 24, 11, 1, 0, (220, 20, 60)), ("rider", 25, 12, 1, 0, (255, 0, 0)),
    ("car", 26, 13, 1, 0, (0, 0, 142)), ("truck", 27, 14, 1, 0, (0, 0, 70)),
    ("bus", 28, 15, 1, 0, (0, 60, 100)), ("caravan", 29, 255, 1, 1, (0, 0, 90)),
    ("trailer", 30, 255, 1, 1, (0, 0, 110)), ("train", 31, 16, 1, 0, (0, 80, 100)),
    ("motorcycle", 32, 17, 1, 0, (0, 0, 230)), ("bicycle", 33, 18, 1, 0, (119, 11, 32)),
]


def cityscapes_labels() -> list[CityscapesLabel]:
    """The label table, from ``cityscapesscripts`` when installed, else the built-in copy."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:
        return [CityscapesLabel(n, i, t, bool(h), bool(g), c) for n, i, t, h, g, c in _TABLE]
    return [
        CityscapesLabel(l.name, l.id, l.trainId, l.hasInstances, l.ignoreInEval, tuple(l.color))
        for l in labels
        if l.id >= 0
    ]


def _tables() -> tuple[np.ndarray, np.ndarray, list[ClassInfo], list[ClassInfo]]:
    labels = cityscapes_labels()
    to_train = np.full(256, -1, dtype=np.int64)  # -1 marks ids that are not in the table
    to_instance_class = np.full(256, -1, dtype=np.int64)
    classes: dict[int, ClassInfo] = {}
    things = [l for l in labels if l.has_instances and not l.ignore_in_eval]
    for l in labels:
        to_train[l.id] = l.train_id
        if l.train_id != 255:
            classes[l.train_id] = ClassInfo(l.name, l.color, l.has_instances)
    for i, l in enumerate(things):
        to_instance_class[l.id] = i
    train_classes = [classes[i] for i in range(len(classes))]
    thing_classes = [ClassInfo(l.name, l.color, True) for l in things]
    return to_train, to_instance_class, train_classes, thing_classes


def _pairs(root: str, split: str, suffix: str, fallback: str = "") -> list[tuple[str, str]]:
    image_dir = os.path.join(root, "leftImg8bit", split)
    gt_dir = os.path.join(root, "gtFine", split)
    out = []
    for image in list_images(image_dir, recursive=True):
        rel = os.path.relpath(image, image_dir)
        if not rel.endswith("_leftImg8bit.png"):
            raise DatasetError(f"{image}: not a Cityscapes image name (*_leftImg8bit.png)")
        stem = os.path.join(gt_dir, rel[: -len("_leftImg8bit.png")])
        gt = stem + suffix
        if not os.path.isfile(gt) and fallback and os.path.isfile(stem + fallback):
            gt = stem + fallback
        if not os.path.isfile(gt):
            raise DatasetError(f"{image}: no ground truth file {gt}")
        out.append((image, gt))
    return out


class CityscapesSemantic(SegmentationDataset):
    """19-class semantic segmentation; label ids outside the 19 train ids become 255."""

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = os.fspath(root)
        self.ignore_value = IGNORE_VALUE
        self.to_train, _, self.classes, _ = _tables()
        # Prefer raw labelIds; a prepared labelTrainIds file is accepted when labelIds is absent.
        self.items = _pairs(self.root, split, "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")
        self.task = "semantic"

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.items[index]
        image, raw = read_image_and_label(image_path, label_path)
        if label_path.endswith("_labelTrainIds.png"):
            bad = (raw >= self.num_classes) & (raw != IGNORE_VALUE)
            sem = raw
        else:
            sem = self.to_train[np.clip(raw, 0, 255)]
            bad = (raw > 255) | (sem < 0)
        if bad.any():
            raise DatasetError(f"{label_path}: unknown Cityscapes label values {np.unique(raw[bad])[:5].tolist()}")
        return {"file_name": image_path, "image": image, "sem_seg": sem}


class CityscapesPanoptic(SegmentationDataset):
    """Panoptic (19 classes, 8 of them things) or instance (8 thing classes) segmentation read
    from ``*_gtFine_instanceIds.png``: a value ``v >= 1000`` is instance ``v % 1000`` of label id
    ``v // 1000``; a smaller value is a label id (stuff, or a crowd region of a thing class)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", task: str = "panoptic") -> None:
        if task not in ("panoptic", "instance"):
            raise ValueError(f"task must be 'panoptic' or 'instance', not {task!r}")
        self.root = os.fspath(root)
        self.task = task
        self.ignore_value = IGNORE_VALUE
        self.to_train, self.to_instance_class, self.semantic_classes, thing_classes = _tables()
        self.classes = self.semantic_classes if task == "panoptic" else thing_classes
        self.items = _pairs(self.root, split, "_gtFine_instanceIds.png")

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, inst_path = self.items[index]
        image = read_image(image_path)
        ids = read_label(inst_path, "instance ids")
        if ids.ndim != 2:
            raise DatasetError(f"{inst_path}: expected a single-channel 16-bit instance id image")
        check_same_size(image, ids, inst_path, image_path)
        label = np.where(ids >= 1000, ids // 1000, ids)
        if (label > 255).any() or (self.to_train[np.clip(label, 0, 255)] < 0).any():
            bad = np.unique(label[(label > 255) | (self.to_train[np.clip(label, 0, 255)] < 0)])
            raise DatasetError(f"{inst_path}: unknown Cityscapes label ids {bad[:5].tolist()}")
        sem = self.to_train[label]
        segments = []
        pan = np.zeros_like(ids)
        for v in np.unique(ids).tolist():
            lab = v // 1000 if v >= 1000 else v
            train_id = int(self.to_train[lab])
            if train_id == IGNORE_VALUE:
                continue  # void label, or a thing class not evaluated (caravan, trailer)
            isthing = self.semantic_classes[train_id].isthing
            if self.task == "instance":
                if not isthing:
                    continue
                category = int(self.to_instance_class[lab])
            else:
                category = train_id
            pan[ids == v] = v  # Cityscapes' own panoptic ids are exactly these values
            segments.append({"id": v, "category_id": category, "iscrowd": int(isthing and v < 1000), "isthing": isthing})
        return {"file_name": image_path, "image": image, "sem_seg": sem, "pan_seg": pan, "segments": segments}
