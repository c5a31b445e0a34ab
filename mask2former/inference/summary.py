"""Run-level files of ``segment``, written by rank 0 once every process is done: built from
the journals and the input stream's order, so they are the same for any number of processes
and any number of (resumed) runs.

* ``areas.csv`` / ``areas.json``: pixels per class summed over the images;
* ``panoptic.json`` (panoptic task): COCO panoptic annotations in input order;
* ``manifest.jsonl``: one line per image, input path -> its output files;
* ``errors.jsonl``: this run's failures, one ``{"path", "error"}`` line each (removed when
  the run had none, so a finished rerun leaves no stale errors).
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Iterable

from ..io import atomic_write_text
from ..outputs import AreaTotals, write_area_table, write_json
from .inputs import InputItem
from .resume import finished_records, run_errors


def write_run_files(out: str, run_id: str, items: Iterable[InputItem], info: Any) -> tuple[int, list[dict[str, Any]]]:
    """Returns (images with complete outputs, this run's errors)."""
    names = [info.id2label[i] for i in range(len(info.id2label))]
    totals = AreaTotals(names)
    records = finished_records(out)
    manifest = io.StringIO()
    panoptic: list[dict[str, Any]] = []
    count = 0
    for item in items:
        rec = records.get(item.key)
        if rec is None:
            continue
        count += 1
        for class_id, pixels in enumerate(rec["pixels"]):
            totals.pixels[class_id] += pixels
        totals.images += 1
        if rec.get("panoptic"):
            panoptic.append(rec["panoptic"])
        manifest.write(json.dumps({"input": item.path, "outputs": rec["outputs"]}) + "\n")
    if count:
        write_area_table(totals.rows(), os.path.join(out, "areas.csv"), os.path.join(out, "areas.json"))
        atomic_write_text(os.path.join(out, "manifest.jsonl"), manifest.getvalue())
    if panoptic:
        cats = [{"id": i, "name": names[i], "isthing": int(i not in info.stuff_ids),
                 "color": list(info.palette[i])} for i in range(len(names))]
        write_json({"annotations": panoptic, "categories": cats}, os.path.join(out, "panoptic.json"))
    errors = run_errors(out, run_id)
    path = os.path.join(out, "errors.jsonl")
    if errors:
        atomic_write_text(path, "".join(json.dumps({"path": e["path"], "error": e["error"]}) + "\n" for e in errors))
    elif os.path.exists(path):
        os.unlink(path)
    return count, errors
