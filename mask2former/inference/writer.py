"""Per-image output files of ``segment`` and the summary each image leaves for the run-level
files. What the files show of an instance prediction is decided here, not in
post-processing: ``NAME_instances.json`` keeps every instance the model returned, while the
labels, overlay and area table paint only those scoring at least ``show_threshold`` (the
original demo's 0.5), so that a top-k list full of low scores still gives a sensible picture."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..outputs import write_json
from ..segmenter import DEFAULT_SHOW_THRESHOLD, SegmentationResult

__all__ = ["DEFAULT_SHOW_THRESHOLD", "WriteOptions", "output_names", "shown", "class_pixels", "write_image"]


@dataclass(frozen=True)
class WriteOptions:
    out: str
    task: str
    overlay: bool = True
    show_threshold: float = DEFAULT_SHOW_THRESHOLD


def output_names(stem: str, opts: WriteOptions) -> list[str]:
    """Every file one image gets, relative to the output folder."""
    names = [stem + "_labels.png"]
    if opts.overlay:
        names.append(stem + "_overlay.png")
    if opts.task == "panoptic":
        names.append(stem + "_panoptic.png")
    if opts.task == "instance":
        names.append(stem + "_instances.json")
    return names + [stem + "_areas.csv", stem + "_areas.json"]


def shown(result: SegmentationResult, show_threshold: float) -> SegmentationResult:
    """The result as the picture shows it (see :meth:`SegmentationResult.shown`)."""
    return result.shown(show_threshold)


def class_pixels(result: SegmentationResult) -> list[int]:
    """Pixels per class id, void last: what the run's area table sums."""
    n = len(result.id2label)
    return np.bincount(np.where(result.labels < 0, n, result.labels).ravel(), minlength=n + 1).tolist()


def write_image(result: SegmentationResult, stem: str, opts: WriteOptions) -> dict[str, Any]:
    """Write one image's files (each atomically); return its summary record."""
    base = os.path.join(opts.out, stem)  # folders of nested stems are made by the atomic writes
    picture = shown(result, opts.show_threshold)
    picture.save_labels(base + "_labels.png")
    if opts.overlay:
        picture.save_overlay(base + "_overlay.png")
    panoptic = None
    if result.task == "panoptic":
        result.save_panoptic_png(base + "_panoptic.png")
        panoptic = result.panoptic_annotation(stem + "_panoptic.png", stem)
    if result.task == "instance":
        write_json(result.coco_instances(stem), base + "_instances.json")
    picture.save_area_table(base + "_areas.csv", base + "_areas.json")
    return {"pixels": class_pixels(picture), "panoptic": panoptic, "outputs": output_names(stem, opts)}
