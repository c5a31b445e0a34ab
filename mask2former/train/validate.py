"""Periodic evaluation during training, on the validation split: mIoU for semantic training,
PQ for panoptic, mask AP for instance — with the evaluate command's scorer, so the numbers
are those ``mask2former evaluate`` prints."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .. import distributed as dist_utils


def validation_segmenter(model: torch.nn.Module, cfg: Any, classes: list, device: torch.device) -> Any:
    """A Segmenter over the model being trained that runs exactly what ``segment`` and
    ``evaluate`` run on the exported model (train/export.py): the original's test-time resize
    to the training's base size, that folder's processor, the task's post-processing order,
    and the dataset's own thing/stuff split and colours."""
    from ..segmenter import Segmenter
    from .export import exported_processor

    processor = exported_processor(cfg, len(classes))
    processor.semantic_resize_first = cfg.task != "semantic"
    seg = Segmenter(model, task=cfg.task, device=str(device), processor=processor)
    seg.info = dataclasses.replace(seg.info, thing_ids=[i for i, c in enumerate(classes) if c.isthing],
                                   palette=[tuple(c.color) for c in classes], test_size=(cfg.base_size, cfg.max_size))
    return seg


def validate(model: torch.nn.Module, cfg: Any, device: torch.device) -> dict[str, Any]:
    """Metrics of ``model`` on ``cfg.val_split`` (empty when there is no such split, and on
    ranks other than 0). Under DDP each process segments its share of the images."""
    from ..commands.evaluate import default_convention, image_folder, iter_predictions
    from ..evaluation.scorer import Scorer
    from ..data import build_dataset

    metrics: dict[str, Any] = {}
    try:
        val = build_dataset(cfg.dataset, cfg.data_root, cfg.val_split)
    except (OSError, ValueError):
        val = None
    if val is not None and len(val):  # every rank scores its share; rank 0 merges and computes
        was_training = model.training
        seg = validation_segmenter(model, cfg, val.classes, device)
        scorer = Scorer(cfg.task, val, default_convention(cfg.dataset, cfg.task))
        folder = image_folder(val, cfg.dataset, cfg.data_root, cfg.val_split)
        indices = range(dist_utils.rank(), len(val), dist_utils.world_size())
        for index, sample, stem, pred in iter_predictions(val, indices, folder, seg, cfg.task, None):
            scorer.add(index, sample, stem, pred)
        scorer.gather()
        if dist_utils.is_main():
            metrics = scorer.metrics()
        model.train(was_training)
    dist_utils.barrier()
    return metrics
