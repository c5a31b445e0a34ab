"""What a checkpoint is for: its task, dataset, class colours, thing/stuff split and the
original's test-time image size, from the checkpoint's own files where it has them
(``classes.json``, ``preprocessor_config.json``) and from its class count otherwise."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

from .checkpoint.convert import preprocessor_config
from .checkpoint.hub import resolve_file
from .checkpoint.labels import dataset_for, palette
from .processor import Mask2FormerImageProcessor

# The task each released dataset's checkpoints were trained for, when the name does not say.
DATASET_TASKS = {"coco_panoptic": "panoptic", "coco_instance": "instance", "cityscapes_instance": "instance",
                 "ade20k_instance": "instance", "mapillary_vistas": "panoptic"}


@dataclass
class ModelInfo:
    id2label: dict[int, str]
    palette: list[tuple[int, int, int]]
    thing_ids: Optional[list[int]]  # None: every class is a thing (unknown dataset)
    task: str
    test_size: tuple[int, int]  # (shortest edge, longest edge)
    folder: Optional[str]
    dataset: Optional[str]
    processor_config: Optional[dict[str, Any]] = None  # preprocessor_config.json carried by an exported file

    @property
    def stuff_ids(self) -> list[int]:
        if self.thing_ids is None:
            return []
        return [i for i in self.id2label if i not in set(self.thing_ids)]

    def processor(self) -> Mask2FormerImageProcessor:
        if self.processor_config is not None:
            return Mask2FormerImageProcessor.from_dict(self.processor_config)
        if self.folder and os.path.isfile(os.path.join(self.folder, "preprocessor_config.json")):
            proc = Mask2FormerImageProcessor.from_pretrained(self.folder)
        else:
            short, long = self.test_size
            proc = Mask2FormerImageProcessor(size={"shortest_edge": short, "longest_edge": long}, size_divisor=32)
        proc.semantic_resize_first = self.task != "semantic"
        return proc

    @classmethod
    def of(cls, model: Any, name: str = "") -> "ModelInfo":
        cfg = model.config
        source = getattr(model, "source", "") or name
        folder = source if source and os.path.isdir(source) else None
        n = cfg.num_labels
        id2label = {i: cfg.id2label[i] for i in range(n)}
        classes = _classes_file(folder)
        dataset = dataset_for(n)
        if classes is not None:
            colours = [tuple(c["color"]) for c in classes]
            things: Optional[list[int]] = [c["id"] for c in classes if c.get("isthing")]
            dataset = None
        elif dataset is not None:
            colours, things = list(dataset.colors), list(dataset.thing_ids)
        else:
            colours, things = palette(n), None
        task = task_for([name, source], cfg.extra.get("task"), dataset.key if dataset else None)
        test = _test_size(folder, cfg, dataset is not None)
        return cls(id2label, colours, things, task, test, folder, dataset.key if dataset else None)


def task_for(names: list[Any], recorded: Optional[str], dataset_key: Optional[str]) -> str:
    """The task a checkpoint was trained for: what its name says, else the task its config
    records (our trained models do), else its released dataset's, else semantic."""
    for name in names:
        hint = _task_hint(os.fspath(name))
        if hint:
            return hint
    if recorded in ("semantic", "instance", "panoptic"):
        return recorded  # type: ignore[return-value]
    return DATASET_TASKS.get(dataset_key or "", "semantic")


def checkpoint_task(name: Any, folder: str, hub_kwargs: Optional[dict[str, Any]] = None) -> Optional[str]:
    """:func:`task_for` read from a checkpoint's files (as :meth:`ModelInfo.of` decides it for
    the loaded model); None if its ``config.json`` cannot be read and its name says nothing."""
    hint = _task_hint(os.fspath(name))
    if hint:
        return hint
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        try:
            path = resolve_file(name, "config.json", optional=True, **(hub_kwargs or {})) or ""
        except (OSError, ValueError):
            return None
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    # As ModelInfo.of: a classes.json of its own means no released dataset.
    dataset = None if _classes_file(os.path.dirname(path)) is not None else \
        dataset_for(len(config.get("id2label") or {}) or int(config.get("num_labels") or 0))
    return task_for([], config.get("task"), dataset.key if dataset else None)


def _classes_file(folder: Optional[str]) -> Optional[list[dict[str, Any]]]:
    if folder is None or not os.path.isfile(os.path.join(folder, "classes.json")):
        return None
    with open(os.path.join(folder, "classes.json"), encoding="utf-8") as f:
        return json.load(f)


def _task_hint(name: str) -> Optional[str]:
    lowered = os.path.basename(os.fspath(name).rstrip("/")).lower()
    for task in ("panoptic", "instance", "semantic"):
        if task in lowered:
            return task
    return None


def _test_size(folder: Optional[str], cfg: Any, known_dataset: bool) -> tuple[int, int]:
    """The released dataset's MIN/MAX_SIZE_TEST, else our own trained model's processor size."""
    if not known_dataset and folder:
        path = resolve_file(folder, "preprocessor_config.json", optional=True)
        if path:
            with open(path, encoding="utf-8") as f:
                size = json.load(f).get("size", {})
            if "shortest_edge" in size:
                return int(size["shortest_edge"]), int(size.get("longest_edge") or 10**9)
    size = preprocessor_config(cfg)["size"]
    return size["shortest_edge"], size["longest_edge"]
