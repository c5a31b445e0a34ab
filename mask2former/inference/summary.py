"""Run-level files of ``segment``, written by rank 0 once every process is done: built from
the journals and the input stream's order, so they are the same for any number of processes
and any number of (resumed) runs.

* ``areas.csv`` / ``areas.json``: pixels per class summed over the images;
* ``panoptic.json`` (panoptic task): COCO panoptic annotations in input order;
* ``instances.json`` (instance task): every image's COCO results, in input order;
* ``manifest.jsonl``: one line per image, input path -> its output files;
* ``errors.jsonl``: this run's failures, one ``{"path", "error"}`` line each (removed when
  the run had none, so a finished rerun leaves no stale errors).
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Iterable

from ..io import atomic_path, atomic_write_text
from ..outputs import AreaTotals, panoptic_categories, write_area_table, write_json
from .inputs import InputItem
from .resume import finished_records, journal_files, run_errors


def write_run_files(out: str, run_id: str, items: Iterable[InputItem], info: Any) -> tuple[int, list[dict[str, Any]]]:
    """Returns (images with complete outputs, this run's errors)."""
    names = [info.id2label[i] for i in range(len(info.id2label))]
    totals = AreaTotals(names)
    records = finished_records(out)
    manifest = io.StringIO()
    panoptic: list[dict[str, Any]] = []
    count, has_instances = 0, False
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
        has_instances = has_instances or any(o.endswith("_instances.json") for o in rec["outputs"])
    if count:
        write_area_table(totals.rows(), os.path.join(out, "areas.csv"), os.path.join(out, "areas.json"))
        atomic_write_text(os.path.join(out, "manifest.jsonl"), manifest.getvalue())
    if panoptic:
        cats = panoptic_categories(names, info.stuff_ids, info.palette)
        write_json({"annotations": panoptic, "categories": cats}, os.path.join(out, "panoptic.json"))
    if has_instances:
        _join_instances(out, items, records)
    errors = run_errors(out, run_id)
    path = os.path.join(out, "errors.jsonl")
    if errors:
        atomic_write_text(path, "".join(json.dumps({"path": e["path"], "error": e["error"]}) + "\n" for e in errors))
    elif os.path.exists(path):
        os.unlink(path)
    for journal in journal_files(out, "errors", run_id) + journal_files(out, "done", run_id):
        if os.path.getsize(journal) == 0:  # nothing to remember: no empty files pile up over reruns
            os.unlink(journal)
    return count, errors


def _join_instances(out: str, items: Iterable[InputItem], records: dict[int, dict[str, Any]]) -> None:
    """One COCO results list from the per-image files, streamed (never all in memory)."""
    with atomic_path(os.path.join(out, "instances.json")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("[")
            first = True
            for item in items:
                rec = records.get(item.key)
                name = next((o for o in rec["outputs"] if o.endswith("_instances.json")), None) if rec else None
                if name is None:
                    continue
                with open(os.path.join(out, name), encoding="utf-8") as part:
                    for entry in json.load(part):
                        f.write(("" if first else ",") + "\n" + json.dumps(entry))
                        first = False
            f.write("\n]\n")
