"""The native API's outputs: for an image, the bytes of each file ``segment`` writes
(``NAME_labels.png`` is ``POST /v1/segment/labels.png``, ...) and one JSON summary."""
from __future__ import annotations

import base64
from typing import Any, Callable

import numpy as np

from .. import outputs as out_files
from ..segmenter import SegmentationResult
from .errors import ApiError

# output name -> (media type, tasks that have it)
OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "labels.png": ("image/png", ("semantic", "instance", "panoptic")),
    "overlay.png": ("image/png", ("semantic", "instance", "panoptic")),
    "areas.csv": ("text/csv; charset=utf-8", ("semantic", "instance", "panoptic")),
    "areas.json": ("application/json", ("semantic", "instance", "panoptic")),
    "panoptic.png": ("image/png", ("panoptic",)),
    "panoptic.json": ("application/json", ("panoptic",)),
    "instances.json": ("application/json", ("instance",)),
}


def check_output(output: str, task: str) -> str:
    if output not in OUTPUTS:
        raise ApiError(404, f"no output {output!r}; outputs: {', '.join(OUTPUTS)}")
    if task not in OUTPUTS[output][1]:
        raise ApiError(422, f"{output} is an output of the {' and '.join(OUTPUTS[output][1])} task, "
                            f"not of {task}")
    return output


def panoptic_json(result: SegmentationResult, stem: str, stuff_ids: list[int]) -> dict[str, Any]:
    """What ``segment`` writes as panoptic.json for a run of this one image."""
    return {"annotations": [result.panoptic_annotation(stem + "_panoptic.png", stem)],
            "categories": out_files.panoptic_categories(result.class_names, stuff_ids, result.palette)}


def render(result: SegmentationResult, output: str, stem: str, stuff_ids: list[int], alpha: float) -> bytes:
    """One output file's bytes, exactly as ``segment`` writes it for an image named ``stem``."""
    picture = result.shown()  # instances: labels, overlay and areas paint those scoring >= 0.5, as segment does
    makers: dict[str, Callable[[], Any]] = {
        "labels.png": lambda: out_files.encode_png(out_files.label_png_array(picture.labels, len(result.id2label))),
        "overlay.png": lambda: out_files.encode_png(picture.overlay(alpha)),
        "areas.csv": lambda: out_files.area_csv_text(picture.area_table()),
        "areas.json": lambda: out_files.json_text(picture.area_table()),
        "panoptic.png": lambda: out_files.encode_png(out_files.id2rgb(result.segment_ids)),
        "panoptic.json": lambda: out_files.json_text(panoptic_json(result, stem, stuff_ids)),
        "instances.json": lambda: out_files.json_text(result.coco_instances(stem)),
    }
    data = makers[output]()
    return data.encode("utf-8") if isinstance(data, str) else data


def summary(result: SegmentationResult, stem: str, stuff_ids: list[int], label_map: bool) -> dict[str, Any]:
    """Everything the web page shows: size, task, classes present with colours, the area
    table, segments (panoptic) or instances, and the label PNG; ``label_map`` adds the raw
    class id per pixel (the label PNG's values, row-major, little-endian)."""
    h, w = result.labels.shape
    picture = result.shown()  # instances: the picture's labels and areas, as segment writes them
    rows = picture.area_table()
    present = [r for r in rows if r["pixels"] > 0]
    classes = [{"id": r["class_id"], "name": r["class_name"], "pixels": r["pixels"], "percent": r["percent"],
                "color": list(result.palette[r["class_id"]]) if r["class_id"] >= 0 else [0, 0, 0]}
               for r in present]
    labels = out_files.label_png_array(picture.labels, len(result.id2label))
    body: dict[str, Any] = {
        "image": {"name": stem, "width": w, "height": h}, "task": result.task, "classes": classes, "areas": rows,
        "labels_png": base64.b64encode(out_files.encode_png(labels)).decode("ascii"),
    }
    if result.task == "panoptic":
        body["segments_info"] = panoptic_json(result, stem, stuff_ids)["annotations"][0]["segments_info"]
    if result.task == "instance":
        body["instances"] = result.coco_instances(stem)
    if label_map:
        body["label_map"] = {"dtype": labels.dtype.name, "void": int(np.iinfo(labels.dtype).max),
                             "data": base64.b64encode(labels.astype(labels.dtype.newbyteorder("<")).tobytes())
                             .decode("ascii")}
    return body
