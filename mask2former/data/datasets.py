"""Shared pieces of the dataset readers: class lists, file reading with one-line errors, and the
panoptic bookkeeping that several formats need.

Every dataset returns a plain dict per image:

* ``file_name``: the image path
* ``image``: ``HxWx3`` uint8 RGB
* ``sem_seg``: ``HxW`` int64 class ids, ``ignore_value`` (255) where unlabelled
* panoptic / instance datasets add ``segments``: a list of dicts with ``category_id``,
  ``iscrowd`` and ``isthing``, plus either
  - ``pan_seg``: ``HxW`` int64 id map (0 = void) and an ``id`` per segment, or
  - ``masks``: ``NxHxW`` bool array, one per segment (COCO instances, which may overlap).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset
from PIL import Image, ImageOps

IGNORE_VALUE = 255
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
    """A bad or missing dataset file; the message is one line and names the file."""


@dataclass(frozen=True)
class ClassInfo:
    name: str
    color: tuple[int, int, int]
    isthing: bool = False


def default_color(index: int) -> tuple[int, int, int]:
    # A fixed, well-spread palette so unnamed classes still get distinct, stable colours.
    rng = np.random.default_rng(index + 12345)
    return tuple(int(v) for v in rng.integers(0, 256, size=3))  # type: ignore[return-value]


def load_class_file(path: str | os.PathLike) -> list[ClassInfo]:
    """Read ``classes.json`` / ``classes.yaml``: either a list, or ``{"classes": [...]}``; each
    entry is a name or ``{"name", "color", "isthing"}``. A class's id is its position."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(f)
            else:
                data = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read class list ({e.__class__.__name__}: {e})") from None
    except Exception as e:  # yaml.YAMLError is not a ValueError
        raise DatasetError(f"{path}: cannot read class list ({e.__class__.__name__})") from None
    entries = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{path}: expected a non-empty list of classes")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise DatasetError(f"{path}: class {i} has no name")
        if "id" in entry and int(entry["id"]) != i:
            raise DatasetError(f"{path}: class {entry['name']!r} has id {entry['id']}, expected {i}")
        color = entry.get("color") or default_color(i)
        if len(color) != 3:
            raise DatasetError(f"{path}: class {entry['name']!r} colour must have 3 values")
        out.append(ClassInfo(str(entry["name"]), tuple(int(c) for c in color), bool(entry.get("isthing", False))))
    return out


def find_class_file(root: str | os.PathLike) -> Optional[str]:
    for name in ("classes.json", "classes.yaml", "classes.yml"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 ``HxWx3``; grey and palette images are expanded, alpha dropped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file is missing")
    try:
        with Image.open(path) as im:
            # Honour the EXIF orientation, as the original's reader does, so annotations line up.
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise DatasetError(f"{path}: cannot read image ({e.__class__.__name__}: {e})") from None


def read_label(path: str | os.PathLike, what: str = "label") -> np.ndarray:
    """A single-channel PNG (8-bit, 16-bit or palette indices) as int64, or an RGB one as
    ``HxWx3`` uint8 for callers that decode colours."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: {what} file is missing")
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
            # Palette PNGs store class ids as indices: read the indices, not the colours.
            return np.asarray(im).astype(np.int64)
    except Exception as e:
        raise DatasetError(f"{path}: cannot read {what} ({e.__class__.__name__}: {e})") from None


def check_same_size(image: np.ndarray, label: np.ndarray, label_path: str, image_path: str) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError(
            f"{label_path}: size {label.shape[1]}x{label.shape[0]} does not match image "
            f"{os.path.basename(image_path)} ({image.shape[1]}x{image.shape[0]})"
        )


def check_label_range(sem_seg: np.ndarray, num_classes: int, path: str, ignore_value: int = IGNORE_VALUE) -> None:
    bad = (sem_seg >= num_classes) & (sem_seg != ignore_value) | (sem_seg < 0)
    if bad.any():
        values = np.unique(sem_seg[bad])[:5].tolist()
        raise DatasetError(
            f"{path}: label values {values} are outside 0..{num_classes - 1} (ignore is {ignore_value})"
        )


def colors_to_ids(rgb: np.ndarray, classes: Sequence[ClassInfo], path: str, ignore_value: int = IGNORE_VALUE) -> np.ndarray:
    """Decode a colour-coded label image with the class colours; black is ignore."""
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    lut = {(c.color[0] << 16) | (c.color[1] << 8) | c.color[2]: i for i, c in enumerate(classes)}
    lut.setdefault(0, ignore_value)
    keys, inverse = np.unique(code, return_inverse=True)
    missing = [k for k in keys.tolist() if k not in lut]
    if missing:
        k = missing[0]
        raise DatasetError(f"{path}: colour {(k >> 16, (k >> 8) & 255, k & 255)} is not a class colour")
    return np.array([lut[k] for k in keys.tolist()], dtype=np.int64)[inverse].reshape(code.shape)


class SegmentationDataset(Dataset):
    """Shared plumbing of every dataset: ``items`` to index and ``classes`` to name."""

    items: list
    classes: list

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)


def read_image_and_label(image_path: str, label_path: str) -> tuple[np.ndarray, np.ndarray]:
    """An image and its single-channel label map of the same size, or a one-line error."""
    image = read_image(image_path)
    raw = read_label(label_path)
    if raw.ndim != 2:
        raise DatasetError(f"{label_path}: expected a single-channel label image")
    check_same_size(image, raw, label_path, image_path)
    return image, raw


def list_images(folder: str, recursive: bool = False) -> list[str]:
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: image folder is missing")
    out = []
    if recursive:
        for dirpath, _, files in os.walk(folder):
            out.extend(os.path.join(dirpath, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    else:
        out = [os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not out:
        raise DatasetError(f"{folder}: no images found")
    return sorted(out)


def panoptic_from_semantic(
    sem_seg: np.ndarray, instances: Optional[np.ndarray], thing_ids: Iterable[int], ignore_value: int = IGNORE_VALUE
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Panoptic id map + segments from a class map and an instance map (0 = no instance).

    Stuff classes give one segment each; each thing instance gives one; thing pixels with no
    instance become a crowd segment of their class (as Cityscapes marks groups)."""
    thing = np.zeros(max(int(sem_seg.max(initial=0)), ignore_value) + 1, dtype=bool)
    thing[[t for t in thing_ids if t < len(thing)]] = True
    segments: list[dict[str, Any]] = []
    inst = np.zeros_like(sem_seg) if instances is None else instances.astype(np.int64)
    # One key per (class, instance) pair; stuff pixels ignore the instance map; -1 is void.
    key = np.where(thing[sem_seg] & (inst > 0), inst, 0) * (ignore_value + 1) + sem_seg
    key = np.where(sem_seg == ignore_value, -1, key)
    keys, inverse = np.unique(key, return_inverse=True)
    ids = np.zeros(len(keys), dtype=np.int64)
    for j, k in enumerate(keys.tolist()):
        if k < 0:
            continue
        cls, ins = k % (ignore_value + 1), k // (ignore_value + 1)
        ids[j] = len(segments) + 1
        isthing = bool(thing[cls])
        segments.append(
            {"id": int(ids[j]), "category_id": int(cls), "iscrowd": int(isthing and ins == 0), "isthing": isthing}
        )
    pan = ids[inverse.reshape(sem_seg.shape)]
    return pan, segments


def semantic_from_panoptic(pan_seg: np.ndarray, segments: Sequence[dict[str, Any]], ignore_value: int = IGNORE_VALUE) -> np.ndarray:
    sem = np.full(pan_seg.shape, ignore_value, dtype=np.int64)
    for seg in segments:
        sem[pan_seg == seg["id"]] = seg["category_id"]
    return sem


def build_dataset(kind: str, root: str, split: str = "train", **kwargs: Any):
    """Make a dataset by name: ``folder``, ``cityscapes``, ``cityscapes_panoptic``,
    ``cityscapes_instance``, ``coco_panoptic``, ``coco_instance``, ``ade20k``."""
    # Imported here because those modules import this one.
    from .ade20k import ADE20KSemantic
    from .cityscapes import CityscapesPanoptic, CityscapesSemantic
    from .coco import CocoInstance, CocoPanoptic
    from .folder import FolderDataset

    makers = {
        "folder": FolderDataset,
        "cityscapes": CityscapesSemantic,
        "cityscapes_panoptic": lambda r, s, **k: CityscapesPanoptic(r, s, task="panoptic", **k),
        "cityscapes_instance": lambda r, s, **k: CityscapesPanoptic(r, s, task="instance", **k),
        "coco_panoptic": CocoPanoptic,
        "coco_instance": CocoInstance,
        "ade20k": ADE20KSemantic,
    }
    if kind not in makers:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(makers)}")
    return makers[kind](root, split, **kwargs)
