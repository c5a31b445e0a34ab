"""Confusion matrices beyond the semantic one, and the PNG plot of any of them.

:class:`InstanceConfusion` is the detection-style matrix (as in ultralytics' detection
``ConfusionMatrix``): predictions scoring at least ``score_threshold`` are matched one-to-one
to ground-truth instances of *any* class by mask IoU >= ``iou_threshold`` (largest IoU
first).  A matched pair counts at (GT class, predicted class), so a confused class shows
off the diagonal; an unmatched GT instance counts at (GT class, "missed"), an unmatched
prediction at ("no object", predicted class).  Crowd GT is not matched to; a prediction
covering a crowd region by ``iou_threshold`` (COCO's crowd IoU: intersection / prediction
area) is left out, as COCO ignores it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_util

from .instance import to_rle


class InstanceConfusion:
    """(C+1) x (C+1) counts: rows GT class then "no object", columns predicted class then "missed"."""

    def __init__(self, num_classes: int, iou_threshold: float = 0.5, score_threshold: float = 0.5) -> None:
        self.num_classes = int(num_classes)
        self.iou_threshold, self.score_threshold = float(iou_threshold), float(score_threshold)
        self.matrix = np.zeros((self.num_classes + 1,) * 2, dtype=np.int64)

    def update(self, gt: Sequence[Mapping[str, Any]], preds: Sequence[Mapping[str, Any]], height: int,
               width: int) -> None:
        """One image. ``gt``: dicts with ``category_id`` (class index), a COCO ``segmentation``
        and optional ``iscrowd``; ``preds``: the same plus ``score``."""
        c, thr = self.num_classes, self.iou_threshold
        preds = [p for p in preds if float(p["score"]) >= self.score_threshold]
        gt_cls = np.array([int(g["category_id"]) for g in gt], dtype=np.int64)
        crowd = np.array([int(g.get("iscrowd", 0)) for g in gt], dtype=bool)
        dt_cls = np.array([int(p["category_id"]) for p in preds], dtype=np.int64)
        # iou: (num preds, num GT); a crowd column holds intersection / prediction area
        iou = np.asarray(mask_util.iou([to_rle(p["segmentation"], height, width) for p in preds],
                                      [to_rle(g["segmentation"], height, width) for g in gt], crowd.tolist())
                         if preds and gt else np.zeros((len(preds), len(gt)))).reshape(len(preds), len(gt))
        dt_used, gt_used = np.zeros(len(preds), bool), crowd.copy()
        pairs = np.argwhere((iou >= thr) & ~crowd[None, :])
        for d, g in sorted(pairs.tolist(), key=lambda dg: -iou[dg[0], dg[1]]):
            if not dt_used[d] and not gt_used[g]:
                dt_used[d] = gt_used[g] = True
                self.matrix[gt_cls[g], dt_cls[d]] += 1
        on_crowd = (iou[:, crowd] >= thr).any(axis=1) if crowd.any() else np.zeros(len(preds), bool)
        np.add.at(self.matrix[c], dt_cls[~dt_used & ~on_crowd], 1)
        np.add.at(self.matrix[:, c], gt_cls[~gt_used], 1)

    def merge(self, other: "InstanceConfusion") -> None:
        self.matrix += other.matrix


def save_confusion_png(matrix: np.ndarray, row_names: Sequence[str], col_names: Sequence[str], path: str,
                       xlabel: str = "predicted", ylabel: str = "ground truth") -> None:
    """Plot counts (rows: ground truth, columns: prediction), each row normalised to sum 1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    from ..io import atomic_path

    m = np.asarray(matrix, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.nan_to_num(m / m.sum(axis=1, keepdims=True))
    n = max(len(row_names), len(col_names))
    side, font = min(40.0, max(5.0, 0.3 * n + 3)), max(3.0, min(9.0, 300 / max(n, 1)))
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(col_names)), list(col_names), rotation=90, fontsize=font)
    ax.set_yticks(range(len(row_names)), list(row_names), fontsize=font)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if n <= 25:  # cell values are readable only for small class counts
        for (i, j), v in np.ndenumerate(m):
            if v >= 0.005:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=font * 0.8,
                        color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
