"""The Hugging Face Inference API's image-segmentation contract, both ways.

Request (what ``huggingface_hub.InferenceClient.image_segmentation`` sends): the raw image as
the body when no parameter is set; else JSON ``{"inputs": "<base64 image>", "parameters":
{threshold, mask_threshold, overlap_mask_area_threshold, subtask}}``.

Response (what it parses): ``[{"label", "score", "mask": "<base64 PNG, mode L, 0/255, image
size>"}]`` with the elements of ``transformers.pipeline("image-segmentation")``: semantic, one
per class present (score null); panoptic, one per segment; instance, one per instance (its
own mask, so instances may overlap, as in the COCO results ``segment`` writes).
Parameters left out take this server's defaults (the original's thresholds, the served task),
so an answer without parameters is ``segment``'s result.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..outputs import encode_png
from ..segmenter import TASKS, SegmentationResult
from .errors import ApiError

PARAMETERS = ("threshold", "mask_threshold", "overlap_mask_area_threshold", "subtask")


@dataclass(frozen=True)
class Options:
    """Per-request segmentation options (None: the served segmenter's own)."""

    task: Optional[str] = None
    threshold: Optional[float] = None
    mask_threshold: Optional[float] = None
    overlap_threshold: Optional[float] = None


def check_options(options: Options) -> Options:
    """422 for a task or a threshold outside what post-processing accepts."""
    if options.task is not None and options.task not in TASKS:
        raise ApiError(422, f"task must be one of {', '.join(TASKS)}; got {options.task!r}")
    for name, low_open in (("threshold", False), ("mask_threshold", True), ("overlap_threshold", False)):
        v = getattr(options, name)
        if v is None:
            continue
        if not math.isfinite(v) or v < 0 or v > 1 or (low_open and v in (0.0, 1.0)):
            bounds = "in (0, 1)" if low_open else "in [0, 1]"
            raise ApiError(422, f"{name} must be {bounds}; got {v}")
    return options


def _number(params: dict[str, Any], key: str) -> Optional[float]:
    v = params.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(422, f"parameters.{key} must be a number; got {json.dumps(v)[:40]}")
    return float(v)


def parse_json_request(body: bytes) -> tuple[bytes, Options]:
    """JSON ``{"inputs": base64, "parameters": {...}}`` -> (image bytes, options)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"body is not valid JSON ({e})") from None
    if not isinstance(payload, dict):
        raise ApiError(422, 'JSON body must be an object {"inputs": "<base64 image>", "parameters": {...}}')
    unknown = sorted(set(payload) - {"inputs", "parameters"})
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(unknown)}; expected inputs and parameters")
    inputs, params = payload.get("inputs"), payload.get("parameters") or {}
    if not isinstance(inputs, str) or not inputs:
        raise ApiError(422, "inputs must be the image as a base64 string")
    if not isinstance(params, dict):
        raise ApiError(422, "parameters must be an object")
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ApiError(422, f"unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(PARAMETERS)}")
    subtask = params.get("subtask")
    if subtask is not None and not isinstance(subtask, str):
        raise ApiError(422, "parameters.subtask must be a string")
    options = Options(subtask, _number(params, "threshold"), _number(params, "mask_threshold"),
                      _number(params, "overlap_mask_area_threshold"))
    return decode_base64(inputs, "inputs"), check_options(options)


def decode_base64(text: str, what: str) -> bytes:
    if text.startswith("data:") and "," in text:  # a data URL carries its bytes after the comma
        text = text.split(",", 1)[1]
    if text.startswith(("http://", "https://", "/", "file:")):
        raise ApiError(422, f"{what} must be the image itself (base64); this server fetches no URLs or files")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"{what} is not valid base64 ({e})") from None


def _mask_png(mask: np.ndarray) -> str:
    return base64.b64encode(encode_png(mask.astype(np.uint8) * 255)).decode("ascii")


def response_elements(result: SegmentationResult) -> list[dict[str, Any]]:
    names = result.id2label
    if result.task == "semantic":
        return [{"label": names[int(c)], "score": None, "mask": _mask_png(result.labels == c)}
                for c in np.unique(result.labels) if c >= 0]
    if result.task == "panoptic":
        return [{"label": names[int(s["label_id"])], "score": _rounded(s["score"]),
                 "mask": _mask_png(result.segment_ids == s["id"])} for s in result.segments]
    return [{"label": names[int(s["label_id"])], "score": _rounded(s["score"]), "mask": _mask_png(m)}
            for s, m in zip(result.segments, result.instance_masks)]


def _rounded(score: float) -> float:
    return round(float(score), 4)  # as in segment's files: batching changes the 7th decimal
