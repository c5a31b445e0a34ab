"""Instance-segmentation mask AP through pycocotools' ``COCOeval`` (not reimplemented).

Masks are turned into compressed COCO RLEs as soon as they arrive, so memory
grows with the RLE sizes only.  ``compute()`` builds in-memory COCO objects and
reports what detectron2's ``COCOEvaluator`` reports for ``segm``: AP, AP50,
AP75, APs, APm, APl and ``AP-<class>`` in percent, NaN where undefined.  As in
detectron2, results carry no ``bbox`` so that COCO uses the mask area for the
small/medium/large split, and ``maxDets`` is COCO's default [1, 10, 100].
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _to_numpy(x: Any) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def encode_masks(masks: Any) -> List[Dict[str, Any]]:
    """(N, H, W) binary masks -> list of compressed RLEs with ``str`` counts (JSON-able)."""
    m = _to_numpy(masks)
    if m.ndim != 3:
        raise ValueError("masks must be (N, H, W)")
    if m.dtype.kind == "f":  # a cast would silently turn soft masks into zeros
        raise ValueError("masks must be binary (bool or integer 0/1), not floating point")
    if m.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def to_rle(seg: Any, h: int, w: int) -> Dict[str, Any]:
    """Any COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as a compressed RLE."""
    if isinstance(seg, list):  # polygons
        return mask_util.merge(mask_util.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_util.frPyObjects(seg, h, w)
    return seg


class InstanceEvaluator:
    """Accumulates COCO GT annotations and COCO results; evaluates with ``COCOeval``.

    ``categories``: COCO category dicts (``id``, optional ``name``) or plain ids.
    The ``labels`` given to :meth:`update` / :meth:`add_ground_truth` with masks are
    indices into this list (the model's contiguous class ids); COCO dicts passed
    directly use the category ``id``.
    """

    def __init__(self, categories: Sequence[Union[int, Mapping[str, Any]]]) -> None:
        cats = [c if isinstance(c, Mapping) else {"id": int(c)} for c in categories]
        self.categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in cats]
        self.cat_ids = [c["id"] for c in self.categories]
        self.reset()

    def reset(self) -> None:
        self.images: Dict[Any, Dict[str, int]] = {}  # image_id -> {height, width}
        self.gt: List[Dict[str, Any]] = []
        self.results: List[Dict[str, Any]] = []

    # -- ground truth ---------------------------------------------------------------------
    def add_ground_truth(
        self,
        image_id: Any,
        height: int,
        width: int,
        annotations: Optional[Sequence[Mapping[str, Any]]] = None,
        masks: Any = None,
        labels: Any = None,
        iscrowd: Any = None,
    ) -> None:
        """Register one image and its GT, either as COCO annotation dicts (any COCO
        ``segmentation`` form; their ``area`` is kept when present, as COCO uses the
        JSON area for the size split) or as (N, H, W) ``masks`` + ``labels``.
        An image with no GT still has to be registered."""
        if image_id in self.images:
            raise ValueError(f"ground truth for image {image_id!r} added twice")
        self.images[image_id] = {"height": int(height), "width": int(width)}
        for ann in annotations or ():
            a = {
                "image_id": image_id,
                "category_id": int(ann["category_id"]),
                "segmentation": ann["segmentation"],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            if "area" in ann:
                a["area"] = float(ann["area"])
            else:
                a["area"] = float(mask_util.area(to_rle(ann["segmentation"], height, width)))
            self.gt.append(a)
        if masks is not None:
            rles = encode_masks(masks)
            labels = _to_numpy(labels).reshape(-1)
            crowd = np.zeros(len(rles), bool) if iscrowd is None else _to_numpy(iscrowd).reshape(-1)
            areas = mask_util.area(rles) if rles else []
            for r, lab, cr, ar in zip(rles, labels, crowd, areas):
                self.gt.append({"image_id": image_id, "category_id": self.cat_ids[int(lab)],
                                "segmentation": r, "iscrowd": int(cr), "area": float(ar)})


    # -- predictions ------------------------------------------------------------------------
    def update(self, image_id: Any, masks: Any, scores: Any, labels: Any) -> None:
        """Add one image's predictions: (N, H, W) binary masks, (N,) scores, (N,) label indices."""
        rles = encode_masks(masks)
        scores = _to_numpy(scores).reshape(-1)
        labels = _to_numpy(labels).reshape(-1)
        if not (len(rles) == len(scores) == len(labels)):
            raise ValueError("masks, scores and labels must have the same length")
        for r, s, lab in zip(rles, scores, labels):
            self.results.append({"image_id": image_id, "category_id": self.cat_ids[int(lab)],
                                 "segmentation": r, "score": float(s)})

    def add_results(self, results: Sequence[Mapping[str, Any]]) -> None:
        """Add COCO result dicts (``image_id``, ``category_id``, RLE ``segmentation``, ``score``)."""
        for r in results:
            seg = dict(r["segmentation"])
            if isinstance(seg["counts"], bytes):
                seg["counts"] = seg["counts"].decode("ascii")
            self.results.append({"image_id": r["image_id"], "category_id": int(r["category_id"]),
                                 "segmentation": seg, "score": float(r["score"])})

    # -- distributed helpers ----------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {"images": dict(self.images), "gt": list(self.gt), "results": list(self.results)}

    def merge(self, other: Union["InstanceEvaluator", Mapping[str, Any]]) -> None:
        st = other.state() if isinstance(other, InstanceEvaluator) else other
        dup = set(self.images) & set(st["images"])
        if dup:
            raise ValueError(f"images evaluated on two ranks: {sorted(dup)[:5]}")
        self.images.update(st["images"])
        self.gt.extend(st["gt"])
        self.results.extend(st["results"])

    # -- metrics ----------------------------------------------------------------------------
    def coco_gt(self) -> COCO:
        """The accumulated GT as an in-memory ``COCO`` object (annotation ids from 1)."""
        dataset = {
            "images": [{"id": i, **hw} for i, hw in self.images.items()],
            "annotations": [{**a, "id": k + 1} for k, a in enumerate(self.gt)],
            "categories": [dict(c) for c in self.categories],
        }
        gt = COCO()
        gt.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt

    def run_cocoeval(self) -> Optional[COCOeval]:
        """Run evaluate/accumulate/summarize; None when there are no predictions."""
        if not self.results:
            return None
        missing = {r["image_id"] for r in self.results} - set(self.images)
        if missing:
            raise ValueError(f"predictions for images without ground truth: {sorted(missing)[:5]}")
        gt = self.coco_gt()
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes adds area/bbox/id to the dicts it gets: hand it copies.
            dt = gt.loadRes([dict(r) for r in self.results])
            ev = COCOeval(gt, dt, "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev

    def compute(self) -> Dict[str, float]:
        ev = self.run_cocoeval()
        if ev is None:
            res = {m: float("nan") for m in METRICS}
            res.update({f"AP-{c['name']}": float("nan") for c in self.categories})
            return res
        res = {m: float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan")
               for i, m in enumerate(METRICS)}
        # precision: [iou thr, recall, category, area range, max dets]; area "all", maxDets 100
        precision = ev.eval["precision"]
        cat_pos = {c: k for k, c in enumerate(ev.params.catIds)}
        for c in self.categories:
            p = precision[:, :, cat_pos[c["id"]], 0, -1]
            p = p[p > -1]
            res[f"AP-{c['name']}"] = float(np.mean(p) * 100) if p.size else float("nan")
        return res
