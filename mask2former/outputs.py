"""Standard output files of a segmentation: label PNGs, colour overlays, COCO panoptic PNG +
JSON, COCO RLE instances, and per-class area tables. Every file is written atomically."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from .io import atomic_path, atomic_write_bytes, atomic_write_text

RGB = tuple[int, int, int]
VOID = -1  # label-map value of pixels no class claims (panoptic void, instance background)


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def save_png(array: np.ndarray, path: str) -> None:
    atomic_write_bytes(path, encode_png(array))


def label_png_array(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids as 8-bit when they fit (void = 255), else 16-bit (void = 65535)."""
    if num_classes < 255:
        return np.where(labels < 0, 255, labels).astype(np.uint8)
    return np.where(labels < 0, 65535, labels).astype(np.uint16)


def colorize(labels: np.ndarray, palette: Sequence[RGB]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) colours; void is black."""
    lut = np.zeros((len(palette) + 1, 3), dtype=np.uint8)
    lut[:-1] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return lut[np.where(labels < 0, len(palette), labels)]


def overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[RGB], alpha: float = 0.5,
            segment_ids: Optional[np.ndarray] = None) -> np.ndarray:
    """Blend class colours over the photo; with ``segment_ids``, outline each segment too."""
    colours = colorize(labels, palette).astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + colours * alpha
    out[labels < 0] = image[labels < 0]
    ids = segment_ids if segment_ids is not None else labels
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    out[edge] = 255
    return out.clip(0, 255).astype(np.uint8)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG encoding: id = R + 256 G + 256² B."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def area_rows(labels: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """Pixels and percent of the image per class (every class listed, void as its own row)."""
    total = labels.size
    counts = np.bincount(np.where(labels < 0, len(names), labels).ravel(), minlength=len(names) + 1)
    rows = [{"class_id": i, "class_name": n, "pixels": int(counts[i]), "percent": 100.0 * counts[i] / total}
            for i, n in enumerate(names)]
    if counts[-1]:
        rows.append({"class_id": VOID, "class_name": "(void)", "pixels": int(counts[-1]),
                     "percent": 100.0 * counts[-1] / total})
    return rows


def area_csv_text(rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["class_id", "class_name", "pixels", "percent"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "percent": f"{r['percent']:.4f}"})
    return buf.getvalue()


def json_text(obj: Any) -> str:
    """The JSON text of every output file."""
    return json.dumps(obj, indent=1)


def write_area_table(rows: Iterable[dict[str, Any]], csv_path: str, json_path: Optional[str] = None) -> None:
    rows = list(rows)
    atomic_write_text(csv_path, area_csv_text(rows))
    if json_path:
        atomic_write_text(json_path, json_text(rows))


def panoptic_categories(names: Sequence[str], stuff_ids: Iterable[int], palette: Sequence[RGB]) -> list[dict[str, Any]]:
    """The ``categories`` of a COCO panoptic JSON (our class ids)."""
    stuff = set(stuff_ids)
    return [{"id": i, "name": n, "isthing": int(i not in stuff), "color": list(palette[i])}
            for i, n in enumerate(names)]


class AreaTotals:
    """Whole-run area table: sums pixels over images, percent of all pixels seen."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.pixels = np.zeros(len(names) + 1, dtype=np.int64)
        self.images = 0

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            self.pixels[r["class_id"] if r["class_id"] >= 0 else len(self.names)] += r["pixels"]
        self.images += 1

    def rows(self) -> list[dict[str, Any]]:
        total = max(int(self.pixels.sum()), 1)
        names = self.names + ["(void)"]
        ids = list(range(len(self.names))) + [VOID]
        return [{"class_id": i, "class_name": n, "pixels": int(p), "percent": 100.0 * p / total}
                for i, n, p in zip(ids, names, self.pixels) if i >= 0 or p > 0]


def write_json(obj: Any, path: str) -> None:
    atomic_write_text(path, json_text(obj))


def save_image(array: np.ndarray, path: str) -> None:
    """PNG or JPEG by extension, atomically."""
    ext = os.path.splitext(path)[1].lower()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="JPEG" if ext in (".jpg", ".jpeg") else "PNG")
