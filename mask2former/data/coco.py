"""COCO panoptic (PNG + JSON) and COCO instance (pycocotools JSON) as released::

    ROOT/{split}2017/*.jpg
    ROOT/annotations/panoptic_{split}2017.json   ROOT/panoptic_{split}2017/*.png
    ROOT/annotations/instances_{split}2017.json

Category ids are made contiguous by sorting the dataset ids (133 panoptic classes, 80 instance
classes), as the original does.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Optional

import numpy as np

from .datasets import (
    SegmentationDataset,
    IGNORE_VALUE,
    ClassInfo,
    DatasetError,
    check_same_size,
    default_color,
    read_image,
    read_label,
    semantic_from_panoptic,
)


def rgb2id(color: np.ndarray) -> np.ndarray:
    """COCO panoptic PNGs store segment ids as R + 256 G + 256^2 B."""
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def _load_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: annotation file is missing")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read annotations ({e.__class__.__name__}: {e})") from None


def _categories(data: dict[str, Any], path: str, all_things: bool = False) -> tuple[dict[int, int], list[ClassInfo]]:
    cats = data.get("categories")
    if not cats:
        raise DatasetError(f"{path}: no 'categories' list")
    cats = sorted(cats, key=lambda c: c["id"])
    to_contiguous = {int(c["id"]): i for i, c in enumerate(cats)}
    classes = [
        ClassInfo(c["name"], tuple(c.get("color") or default_color(i)), all_things or bool(c.get("isthing", 1)))
        for i, c in enumerate(cats)
    ]
    return to_contiguous, classes


class CocoPanoptic(SegmentationDataset):
    """COCO-format panoptic segmentation; also usable for any dataset in that format (e.g. the
    prepared Cityscapes or ADE20K panoptic JSONs) by passing the three paths."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_dir: Optional[str] = None,
        panoptic_dir: Optional[str] = None,
        panoptic_json: Optional[str] = None,
    ) -> None:
        root = os.fspath(root)
        self.image_dir = image_dir or os.path.join(root, f"{split}2017")
        self.panoptic_dir = panoptic_dir or os.path.join(root, f"panoptic_{split}2017")
        self.json_path = panoptic_json or os.path.join(root, "annotations", f"panoptic_{split}2017.json")
        self.task = "panoptic"
        self.ignore_value = IGNORE_VALUE
        data = _load_json(self.json_path)
        self.to_contiguous, self.classes = _categories(data, self.json_path)
        names = {img["id"]: img["file_name"] for img in data.get("images", [])}
        self.items = []
        for ann in data.get("annotations", []):
            # The image's own entry names its file; fall back to the PNG's stem + .jpg as the original.
            name = names.get(ann["image_id"], os.path.splitext(ann["file_name"])[0] + ".jpg")
            for seg in ann["segments_info"]:
                if seg["category_id"] not in self.to_contiguous:
                    raise DatasetError(f"{self.json_path}: image {ann['image_id']} uses unknown category {seg['category_id']}")
            self.items.append((os.path.join(self.image_dir, name), os.path.join(self.panoptic_dir, ann["file_name"]), ann["segments_info"]))
        if not self.items:
            raise DatasetError(f"{self.json_path}: no annotations")

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, png_path, infos = self.items[index]
        image = read_image(image_path)
        rgb = read_label(png_path, "panoptic PNG")
        if rgb.ndim != 3:
            raise DatasetError(f"{png_path}: panoptic PNG must be RGB")
        check_same_size(image, rgb, png_path, image_path)
        pan = rgb2id(rgb)
        segments = []
        for seg in infos:
            cat = self.to_contiguous[seg["category_id"]]
            segments.append(
                {"id": int(seg["id"]), "category_id": cat, "iscrowd": int(seg.get("iscrowd", 0)), "isthing": self.classes[cat].isthing}
            )
        listed = np.array([s["id"] for s in segments] + [0], dtype=np.int64)
        present = np.unique(pan)
        unknown = present[~np.isin(present, listed)]
        if unknown.size:
            raise DatasetError(f"{png_path}: segment ids {unknown[:5].tolist()} are not in {os.path.basename(self.json_path)}")
        sem = semantic_from_panoptic(pan, segments, self.ignore_value)
        return {"file_name": image_path, "image": image, "sem_seg": sem, "pan_seg": pan, "segments": segments}


class CocoInstance(SegmentationDataset):
    """COCO instance segmentation: polygons and RLEs decoded with pycocotools into one mask
    per annotation (masks may overlap, so no id map)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_dir: Optional[str] = None,
        annotation_json: Optional[str] = None,
        skip_empty: bool = False,
    ) -> None:
        from pycocotools.coco import COCO

        root = os.fspath(root)
        self.image_dir = image_dir or os.path.join(root, f"{split}2017")
        self.json_path = annotation_json or os.path.join(root, "annotations", f"instances_{split}2017.json")
        self.task = "instance"
        self.ignore_value = IGNORE_VALUE
        data = _load_json(self.json_path)
        self.to_contiguous, self.classes = _categories(data, self.json_path, all_things=True)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            self.coco.createIndex()
        for ann in data.get("annotations", []):
            if ann["category_id"] not in self.to_contiguous:
                raise DatasetError(f"{self.json_path}: annotation {ann.get('id')} uses unknown category {ann['category_id']}")
        ids = sorted(self.coco.imgs)
        if skip_empty:  # the original trains only on images with at least one annotation
            ids = [i for i in ids if self.coco.getAnnIds(imgIds=[i])]
        self.image_ids = ids
        if not self.image_ids:
            raise DatasetError(f"{self.json_path}: no images")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.coco.imgs[self.image_ids[index]]
        image_path = os.path.join(self.image_dir, info["file_name"])
        image = read_image(image_path)
        h, w = image.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise DatasetError(f"{image_path}: size {w}x{h} differs from {info['width']}x{info['height']} in the JSON")
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[info["id"]]))
        masks = np.zeros((len(anns), h, w), dtype=bool)
        segments = []
        for i, ann in enumerate(anns):
            try:
                masks[i] = self.coco.annToMask(ann).astype(bool)
            except Exception as e:
                raise DatasetError(f"{self.json_path}: annotation {ann.get('id')} has a bad segmentation ({e})") from None
            segments.append({"category_id": self.to_contiguous[ann["category_id"]], "iscrowd": int(ann.get("iscrowd", 0)), "isthing": True})
        # A semantic map for convenience: later annotations cover earlier ones where they overlap.
        sem = np.full((h, w), self.ignore_value, dtype=np.int64)
        for seg, m in zip(segments, masks):
            if not seg["iscrowd"]:
                sem[m] = seg["category_id"]
        return {"file_name": image_path, "image": image, "sem_seg": sem, "masks": masks, "segments": segments}
