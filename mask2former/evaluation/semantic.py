"""Streaming semantic-segmentation metrics (mIoU, fwIoU, mACC, pACC).

Only a confusion matrix is kept, so memory does not grow with the number of
images, and matrices from several ranks can simply be summed.

Layout of the (C+1) x (C+1) int64 matrix: rows are predictions, columns are
ground truth (as in detectron2's ``SemSegEvaluator``).  Row ``C`` collects
pixels whose prediction is not a valid class (outside ``[0, C)``); column
``C`` collects pixels whose ground truth is ``ignore_label``.

Conventions for classes without ground-truth pixels (``absent_class_convention``)
-------------------------------------------------------------------------------
``"detectron2"`` (default; detectron2 since commit f3c1bc1, July 2022)
    A class with no GT pixel gets IoU = NaN and is left out of mIoU and fwIoU.
    A predicted-but-absent class therefore costs nothing in mIoU.
``"detectron2_v0.6"`` (detectron2 <= v0.6, used for the published Mask2Former numbers)
    Per-class IoU is still NaN for a class with no GT pixel, but the mIoU
    denominator counts every class that is in GT *or* in the predictions:
    ``mIoU = sum(IoU over classes with GT) / #(classes with GT or prediction)``,
    i.e. a predicted-but-absent class counts as IoU 0.
``"cityscapes"`` (cityscapesscripts ``evalPixelLevelSemanticLabeling``)
    ``IoU = tp / (tp + fp + fn)``; NaN only when that denominator is 0, so a
    predicted-but-absent class has IoU 0 (reported, and averaged in).  mIoU is
    the mean of the non-NaN IoUs.

In every convention a class absent from both GT and predictions is NaN and left
out of every mean.

Invalid predictions (values outside ``[0, C)``) on pixels with valid GT:
    * detectron2 conventions: the pixel is dropped, as detectron2 drops a
      prediction equal to ``C`` (it falls in the extra row that
      ``conf[:-1, :-1]`` discards; detectron2 itself cannot produce larger
      values because it takes an argmax, and would index out of bounds).
    * cityscapes: the pixel counts as a false negative of its GT class, as
      cityscapesscripts does for a prediction of a label that is ignored in
      evaluation.  pACC / mACC / fwIoU (not reported by cityscapesscripts) use
      the detectron2 formulas with these pixels counted as GT pixels.
GT values that are neither ``ignore_label`` nor in ``[0, C)`` raise
``ValueError`` (cityscapesscripts stops on them; detectron2 silently corrupts
its matrix).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

try:  # torch is optional for this module
    import torch
except ImportError:  # pragma: no cover
    torch = None

ArrayLike = Union[np.ndarray, "torch.Tensor"]

CONVENTIONS = ("detectron2", "detectron2_v0.6", "cityscapes")
_MAX_JOINT = 1 << 22  # joint histograms up to 4M cells (32 MiB); wider value ranges take the direct path


def _to_numpy(x: Any) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _range(x: np.ndarray) -> tuple[Optional[int], Optional[int]]:
    """(min, max) of an integer array, (None, None) for other dtypes."""
    if x.dtype == bool:
        return 0, 1
    if x.dtype.kind not in "iu":
        return None, None
    return int(x.min()), int(x.max())


def _joint_histogram(pred: np.ndarray, p_lo: int, p_hi: int, gt: np.ndarray, g_lo: int, g_hi: int) -> np.ndarray:
    """(P, G) counts of pixel pairs, P = p_hi - p_lo + 1 pred values, G likewise for gt."""
    n_p, n_g = p_hi - p_lo + 1, g_hi - g_lo + 1
    dtype = np.uint16 if n_p * n_g <= 1 << 16 else np.uint32  # the pair index, as narrow as it fits

    def offset(x: np.ndarray, lo: int) -> np.ndarray:
        if x.dtype == bool or lo == 0:
            return x.astype(dtype)
        return (x - x.dtype.type(lo)).astype(dtype) if lo > 0 else (x.astype(np.int64) - lo).astype(dtype)

    index = offset(pred, p_lo)
    index *= dtype(n_g)
    index += offset(gt, g_lo)
    return np.bincount(index.reshape(-1), minlength=n_p * n_g).reshape(n_p, n_g)


class SemanticEvaluator:
    """Accumulates a confusion matrix image by image; see the module docstring."""

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        class_names: Optional[Sequence[str]] = None,
        absent_class_convention: str = "detectron2",
    ) -> None:
        if absent_class_convention not in CONVENTIONS:
            raise ValueError(f"absent_class_convention must be one of {CONVENTIONS}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError("class_names must have num_classes entries")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.class_names = list(class_names) if class_names is not None else [
            str(i) for i in range(self.num_classes)
        ]
        self.absent_class_convention = absent_class_convention
        self.reset()

    def reset(self) -> None:
        n = self.num_classes + 1
        self.conf_matrix = np.zeros((n, n), dtype=np.int64)

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one image: ``pred`` and ``gt`` are HxW integer label maps."""
        pred = _to_numpy(pred)
        gt = _to_numpy(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
        if pred.size == 0:
            return
        c = self.num_classes
        (p_lo, p_hi), (g_lo, g_hi) = _range(pred), _range(gt)
        if p_lo is None or g_lo is None or (p_hi - p_lo + 1) * (g_hi - g_lo + 1) > _MAX_JOINT:
            self._update_by_label(pred, gt)
            return
        # Count every (pred value, GT value) pair once, then fold the values into classes: a
        # single pass over the pixels in the inputs' own (narrow) dtype, instead of one
        # comparison pass per rule on int64 copies.
        joint = _joint_histogram(pred, p_lo, p_hi, gt, g_lo, g_hi)  # (pred values, GT values)
        p_val, g_val = np.arange(p_lo, p_hi + 1), np.arange(g_lo, g_hi + 1)
        rows = np.where((p_val >= 0) & (p_val < c), p_val, c)  # invalid predictions: the extra row
        cols = np.where(g_val == self.ignore_label, c, np.where((g_val >= 0) & (g_val < c), g_val, c + 1))
        bad = (cols == c + 1) & (joint.sum(axis=0) > 0)
        if bad.any():
            raise ValueError(f"ground truth has labels outside [0, {c}) that are not ignore_label: "
                             f"{g_val[bad][:10].tolist()}")
        folded = np.zeros((c + 1, c + 2), dtype=np.int64)
        np.add.at(folded, (rows[:, None], cols[None, :]), joint)
        self.conf_matrix += folded[:, : c + 1]

    def _update_by_label(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """The direct path, for value ranges too wide for a joint histogram."""
        c = self.num_classes
        pred = pred.reshape(-1).astype(np.int64, copy=False)
        gt = gt.reshape(-1).astype(np.int64)  # copied: we overwrite ignore below
        ignore = gt == self.ignore_label
        bad_gt = ~ignore & ((gt < 0) | (gt >= c))
        if bad_gt.any():
            raise ValueError(f"ground truth has labels outside [0, {c}) that are not ignore_label: "
                             f"{np.unique(gt[bad_gt])[:10].tolist()}")
        gt[ignore] = c
        # Every invalid prediction goes to the single extra row, so an odd value can
        # never alias into another cell.
        pred = np.where((pred < 0) | (pred >= c), c, pred)
        self.conf_matrix += np.bincount(
            (c + 1) * pred + gt, minlength=(c + 1) * (c + 1)
        ).reshape(c + 1, c + 1)

    def update_confusion(self, conf_matrix: ArrayLike) -> None:
        """Add a precomputed (C+1)x(C+1) matrix in this module's layout."""
        m = _to_numpy(conf_matrix).astype(np.int64)
        if m.shape != self.conf_matrix.shape:
            raise ValueError("confusion matrix has the wrong shape")
        self.conf_matrix += m

    # -- distributed helpers: ranks send state(), the main rank merges -----------------
    def state(self) -> Dict[str, Any]:
        return {"conf_matrix": self.conf_matrix.copy(), "num_classes": self.num_classes}

    def load_state(self, state: Dict[str, Any]) -> None:
        self.reset()
        self.merge(state)

    def merge(self, other: Union["SemanticEvaluator", Dict[str, Any]]) -> None:
        st = other.state() if isinstance(other, SemanticEvaluator) else other
        if int(st["num_classes"]) != self.num_classes:
            raise ValueError("cannot merge evaluators with different num_classes")
        self.conf_matrix += np.asarray(st["conf_matrix"], dtype=np.int64)

    # -- metrics ------------------------------------------------------------------------
    def compute_raw(self) -> Dict[str, Any]:
        """Metrics as fractions in [0, 1] plus per-class arrays (NaN where undefined)."""
        c = self.num_classes
        conv = self.absent_class_convention
        m = self.conf_matrix
        tp = m.diagonal()[:-1].astype(float)
        pos_pred = m[:-1, :-1].sum(axis=1).astype(float)
        if conv == "cityscapes":
            # Invalid predictions on valid GT pixels count against the GT class.
            pos_gt = m[:, :-1].sum(axis=0).astype(float)
        else:
            pos_gt = m[:-1, :-1].sum(axis=0).astype(float)
        union = pos_gt + pos_pred - tp  # == tp + fp + fn

        acc = np.full(c, np.nan)
        iou = np.full(c, np.nan)
        acc_valid = pos_gt > 0
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        if conv == "cityscapes":
            iou_valid = union > 0
        else:
            iou_valid = acc_valid & (union > 0)
        iou[iou_valid] = tp[iou_valid] / union[iou_valid]

        total_gt = pos_gt.sum()
        class_weights = pos_gt / total_gt if total_gt > 0 else np.zeros(c)
        with np.errstate(invalid="ignore", divide="ignore"):
            macc = acc[acc_valid].sum() / acc_valid.sum()
            if conv == "detectron2_v0.6":
                miou = iou[acc_valid].sum() / ((pos_gt + pos_pred) > 0).sum()
            else:
                miou = iou[iou_valid].sum() / iou_valid.sum()
            w_valid = acc_valid & iou_valid  # classes with GT: the only ones with weight
            fwiou = (iou[w_valid] * class_weights[w_valid]).sum() if total_gt > 0 else np.nan
            pacc = tp.sum() / total_gt
        return {
            "mIoU": float(miou), "fwIoU": float(fwiou), "mACC": float(macc), "pACC": float(pacc),
            "IoU": iou, "ACC": acc, "convention": conv,
        }

    def compute(self) -> Dict[str, Any]:
        """detectron2-style flat dict, in percent (``IoU-<name>``, ``ACC-<name>``)."""
        raw = self.compute_raw()
        res: Dict[str, Any] = {"mIoU": 100 * raw["mIoU"], "fwIoU": 100 * raw["fwIoU"]}
        for i, name in enumerate(self.class_names):
            res[f"IoU-{name}"] = 100 * float(raw["IoU"][i])
        res["mACC"] = 100 * raw["mACC"]
        res["pACC"] = 100 * raw["pACC"]
        for i, name in enumerate(self.class_names):
            res[f"ACC-{name}"] = 100 * float(raw["ACC"][i])
        res["absent_class_convention"] = raw["convention"]
        return res
