"""Streaming panoptic quality (PQ / SQ / RQ) with COCO ``pq_compute`` semantics.

Per image we keep only per-category counters (tp, fp, fn, sum of matched IoU),
so memory is constant and ranks merge by addition.  The numbers are those of
panopticapi's ``pq_compute`` (and its copy in cityscapesscripts):

* gt pixels with id 0 are VOID: pixels of a predicted segment that fall on VOID
  are removed from its area in the IoU union;
* a gt id that is neither 0 nor listed in ``gt_segments_info`` is plain
  unmatched background (not VOID), exactly as in ``pq_compute``;
* pairs (gt, pred) of the same category with IoU > 0.5 are matches (unique by
  construction); crowd gt segments never match and are not false negatives;
* an unmatched prediction is not a false positive when more than half of its
  area lies on VOID plus the crowd region of its category (if several crowd
  segments share a category, ``pq_compute`` keeps only the last one listed; so
  do we);
* a category with tp + fp + fn == 0 scores 0 and is left out of the averages.

Differences, all documented choices: gt segment areas are pixel counts of the
id map (``pq_compute`` reads the JSON ``area``, which equals it in COCO and
Cityscapes files); an average over zero categories is NaN instead of a
ZeroDivisionError; with ``unknown_category="void"`` (default) a predicted
segment whose category is not in ``categories`` is turned into VOID prediction
pixels, where ``pq_compute`` raises (``unknown_category="raise"`` restores that).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

VOID = 0
_LUT_MIN = 1 << 16  # lookup table up to 512 KiB: stays in cache
_CHUNK = 1 << 17  # pixels per step: temporaries stay in cache on big images
_PIXELS_PER_BIN = 4  # with many segments, chunks big enough to amortise each bincount
_HASH_TRIES = 32
_HASH_MAX_KEYS = 512  # n^2-slot table stays small (<= 256k slots)


def _to_numpy(x: Any) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def rgb2id(color: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colour (HxWx3) -> segment id (HxW, int32)."""
    c = np.asarray(color)
    if c.dtype != np.uint8:
        c = c.astype(np.uint32)
    out = np.empty(c.shape[:-1], dtype=np.int32)  # ids are < 2**24
    # channel by channel, a block of rows at a time: temporaries stay in cache
    rows = c.reshape(-1, *c.shape[-2:]) if c.ndim >= 3 else c[None]
    o = out.reshape(rows.shape[:-1])
    step = max(1, _CHUNK // max(1, rows.shape[1]))
    for s in range(0, rows.shape[0], step):
        blk, ob = rows[s : s + step], o[s : s + step]
        np.left_shift(blk[..., 2], 16, out=ob, dtype=np.int32)
        ob |= np.left_shift(blk[..., 1], 8, dtype=np.int32)
        ob |= blk[..., 0]
    return out


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment id (HxW) -> COCO panoptic colour (HxWx3 uint8)."""
    ids = np.asarray(ids).astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read a COCO panoptic PNG into an id map (RGB -> rgb2id; 1-channel kept as is)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.array(im)
    return rgb2id(arr[..., :3]) if arr.ndim == 3 else arr.astype(np.int64)


def iter_coco_panoptic(
    json_file: Union[str, os.PathLike, Mapping[str, Any]], png_folder: Union[str, os.PathLike]
) -> Iterator[Tuple[Any, np.ndarray, List[Dict[str, Any]]]]:
    """Yield ``(image_id, id_map, segments_info)`` for each annotation of a COCO panoptic JSON."""
    data = _load_json(json_file)
    for ann in data["annotations"]:
        yield ann["image_id"], read_panoptic_png(os.path.join(png_folder, ann["file_name"])), ann[
            "segments_info"
        ]


def _load_json(obj: Union[str, os.PathLike, Mapping[str, Any]]) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    with open(obj, "r") as f:
        return json.load(f)


class _IdIndexer:
    """Maps pixel ids to small indices: ``seg_index[k]`` for ``seg_ids[k]``, else ``n_other``.

    Avoids sorting the image (what np.unique does): a direct lookup table when the
    ids are small, otherwise a collision-free multiplicative hash over the few
    listed ids plus a key comparison that sends unlisted ids to ``n_other``.  Built
    once per image from the id range, then applied chunk by chunk.
    """

    def __init__(self, lo: int, hi: int, seg_ids: np.ndarray, seg_index: np.ndarray, n_other: int) -> None:
        self.n_other = n_other
        self.mode = "search"
        if lo >= 0 and hi < _LUT_MIN:
            self.mode = "lut"
            self.lut = np.full(hi + 1, n_other, dtype=np.intp)
            ok = (seg_ids >= 0) & (seg_ids <= hi)
            self.lut[seg_ids[ok]] = seg_index[ok]
            return
        table = _perfect_hash(seg_ids) if lo >= 0 and hi < 2**32 and len(seg_ids) <= _HASH_MAX_KEYS else None
        if table is not None:
            self.mode = "hash"
            self.mult, self.shift, keys, slot = table
            self.tkeys = np.zeros(1 << (32 - int(self.shift)), dtype=np.uint32)
            self.tidx = np.full(self.tkeys.size, n_other, dtype=np.intp)
            self.tkeys[slot] = keys
            self.tidx[slot] = seg_index[(seg_ids >= 0) & (seg_ids < 2**32)]
        else:  # huge/negative ids or too many segments: binary search
            order = np.argsort(seg_ids)
            self.keys, self.kidx = seg_ids[order], seg_index[order]

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        if self.mode == "lut":
            return np.take(self.lut, flat.astype(np.intp, copy=False))  # take(intp) beats fancy indexing
        if self.mode == "hash":
            f = flat.view(np.uint32) if flat.dtype == np.int32 else flat.astype(np.uint32, copy=False)
            h = ((f * self.mult) >> self.shift).astype(np.intp)  # the product wraps mod 2**32 on purpose
            idx = np.take(self.tidx, h)
            miss = np.take(self.tkeys, h) != f  # an unlisted id that landed in a used slot
            if miss.any():
                idx[miss] = self.n_other
            return idx
        pos = np.minimum(np.searchsorted(self.keys, flat), len(self.keys) - 1)
        return np.where(self.keys[pos] == flat, self.kidx[pos], self.n_other)


def _flat_ints(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1)
    return flat if flat.dtype.kind in "iu" else flat.astype(np.int64)


def _compact(ids_map: np.ndarray, seg_ids: np.ndarray, seg_index: np.ndarray, n_other: int) -> np.ndarray:
    """Whole-image form of :class:`_IdIndexer` (used by tests)."""
    flat = _flat_ints(ids_map)
    if flat.size == 0:
        return np.zeros(0, dtype=np.intp)
    return _IdIndexer(int(flat.min()), int(flat.max()), seg_ids, seg_index, n_other)(flat)


def _perfect_hash(seg_ids: np.ndarray) -> Optional[Tuple[np.uint32, np.uint32, np.ndarray, np.ndarray]]:
    """Find ``mult`` such that ``(id * mult mod 2**32) >> shift`` is injective on the ids."""
    keys = seg_ids[(seg_ids >= 0) & (seg_ids < 2**32)].astype(np.uint32)
    n = max(len(keys), 1)
    bits = min(max(6, int(np.ceil(np.log2(n * n)))), 24)  # n^2 slots: injective with p > 0.5
    shift = np.uint32(32 - bits)
    rng = np.random.default_rng(n)  # deterministic
    for _ in range(_HASH_TRIES):
        mult = np.uint32(int(rng.integers(0, 2**31)) * 2 + 1)
        slot = (keys * mult) >> shift
        if np.unique(slot).size == len(keys):
            return mult, shift, keys, slot
    return None


class PanopticEvaluator:
    """Accumulates PQ statistics image by image.

    ``categories``: COCO-style list of dicts (``id``, ``isthing``, optional ``name``)
    or a dict ``{id: dict}`` as ``pq_compute`` builds it.  Category ids in
    ``segments_info`` must be these ids.
    """

    def __init__(
        self,
        categories: Union[Sequence[Mapping[str, Any]], Mapping[int, Mapping[str, Any]]],
        unknown_category: str = "void",
    ) -> None:
        if unknown_category not in ("void", "raise"):
            raise ValueError("unknown_category must be 'void' or 'raise'")
        cats = list(categories.values()) if isinstance(categories, Mapping) else list(categories)
        self.categories: Dict[int, Dict[str, Any]] = {int(c["id"]): dict(c) for c in cats}
        self.cat_ids = np.array(list(self.categories), dtype=np.int64)  # definition order
        self._cat_index = {c: i for i, c in enumerate(self.categories)}
        self.isthing = np.array([c.get("isthing", 0) == 1 for c in self.categories.values()])
        self.unknown_category = unknown_category
        self.reset()

    def reset(self) -> None:
        k = len(self.cat_ids)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.iou = np.zeros(k, dtype=np.float64)
        self.num_images = 0

    # -- accumulation -------------------------------------------------------------------
    def _segments(
        self, segs: Sequence[Mapping[str, Any]], side: str
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.array([int(s["id"]) for s in segs], dtype=np.int64)
        if (ids == VOID).any():
            raise ValueError(f"{side} segment id 0 is reserved for VOID")
        if np.unique(ids).size != ids.size:
            raise ValueError(f"duplicate {side} segment ids")
        cats = np.empty(len(segs), dtype=np.int64)
        for i, s in enumerate(segs):
            c = self._cat_index.get(int(s["category_id"]), -1)
            if c < 0 and (side == "gt" or self.unknown_category == "raise"):
                raise KeyError(f"{side} segment {s['id']} has unknown category_id {s['category_id']}")
            cats[i] = c
        crowd = np.array([int(s.get("iscrowd", 0)) == 1 for s in segs], dtype=bool)
        return ids, cats, crowd

    def update(
        self,
        pred_ids: Any,
        pred_segments_info: Sequence[Mapping[str, Any]],
        gt_ids: Any,
        gt_segments_info: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image: HxW id maps plus their ``segments_info`` lists (COCO panoptic format)."""
        pred_ids, gt_ids = _to_numpy(pred_ids), _to_numpy(gt_ids)
        if pred_ids.shape != gt_ids.shape:
            raise ValueError(f"pred shape {pred_ids.shape} != gt shape {gt_ids.shape}")
        p_ids, p_cat, _ = self._segments(pred_segments_info, "pred")
        g_ids, g_cat, g_crowd = self._segments(gt_segments_info, "gt")
        # Unknown-category predictions become VOID (index 0); known ones get 1..P.
        known = p_cat >= 0
        p_cat = p_cat[known]
        n_p, n_g = len(p_cat), len(g_ids)
        p_index = np.zeros(len(known), dtype=np.intp)
        p_index[known] = np.arange(1, n_p + 1)
        # Joint histogram over (gt segment, pred segment): one bincount per chunk
        # instead of a sort of gt*OFFSET+pred and a Python loop over the pairs.
        # gt indices come out premultiplied by the row width w.
        w = n_p + 2
        pf, gf = _flat_ints(pred_ids), _flat_ints(gt_ids)
        counts = np.zeros((n_g + 2) * w, dtype=np.int64)
        if pf.size:
            p_map = _IdIndexer(int(pf.min()), int(pf.max()), np.concatenate([[VOID], p_ids]),
                               np.concatenate([[0], p_index]), n_p + 1)
            g_map = _IdIndexer(int(gf.min()), int(gf.max()), np.concatenate([[VOID], g_ids]),
                               np.arange(n_g + 1) * w, (n_g + 1) * w)
            step = max(_CHUNK, _PIXELS_PER_BIN * counts.size)  # many segments: fewer bincounts
            for s in range(0, pf.size, step):
                code = g_map(gf[s : s + step])
                code += p_map(pf[s : s + step])
                counts += np.bincount(code, minlength=counts.size)
        counts = counts.reshape(n_g + 2, w)
        if counts[:, n_p + 1].any():
            raise KeyError("prediction id map has segment ids not listed in pred_segments_info")
        pred_area = counts[:, 1 : n_p + 1].sum(axis=0)
        if (pred_area == 0).any():
            raise KeyError("pred_segments_info lists segments absent from the prediction id map")
        gt_area = counts[1 : n_g + 1, :].sum(axis=1)
        void_inter = counts[0, 1 : n_p + 1]
        inter = counts[1 : n_g + 1, 1 : n_p + 1]

        cand = (g_cat[:, None] == p_cat[None, :]) & ~g_crowd[:, None] & (inter > 0)
        gg, pp = np.nonzero(cand)
        it = inter[gg, pp]
        union = pred_area[pp] + gt_area[gg] - it - void_inter[pp]
        iou = it / union
        hit = iou > 0.5
        gg, pp, iou = gg[hit], pp[hit], iou[hit]
        k = len(self.cat_ids)
        self.tp += np.bincount(g_cat[gg], minlength=k)
        self.iou += np.bincount(g_cat[gg], weights=iou, minlength=k)
        g_matched = np.zeros(n_g, dtype=bool)
        g_matched[gg] = True
        p_matched = np.zeros(n_p, dtype=bool)
        p_matched[pp] = True

        fn_mask = ~g_matched & ~g_crowd
        self.fn += np.bincount(g_cat[fn_mask], minlength=k)
        crowd_row = {}  # category -> row of its (last listed) crowd segment
        for j in np.nonzero(g_crowd)[0]:
            crowd_row[int(g_cat[j])] = j + 1
        ignored = void_inter.copy()
        for c, row in crowd_row.items():
            sel = p_cat == c
            ignored[sel] += counts[row, 1 : n_p + 1][sel]
        fp_mask = ~p_matched & ~(ignored / pred_area > 0.5)
        self.fp += np.bincount(p_cat[fp_mask], minlength=k)
        self.num_images += 1

    # -- distributed helpers --------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {"cat_ids": self.cat_ids.copy(), "tp": self.tp.copy(), "fp": self.fp.copy(),
                "fn": self.fn.copy(), "iou": self.iou.copy(), "num_images": self.num_images}

    def merge(self, other: Union["PanopticEvaluator", Mapping[str, Any]]) -> None:
        st = other.state() if isinstance(other, PanopticEvaluator) else other
        if not np.array_equal(np.asarray(st["cat_ids"]), self.cat_ids):
            raise ValueError("cannot merge evaluators with different categories")
        self.tp += np.asarray(st["tp"], dtype=np.int64)
        self.fp += np.asarray(st["fp"], dtype=np.int64)
        self.fn += np.asarray(st["fn"], dtype=np.int64)
        self.iou += np.asarray(st["iou"], dtype=np.float64)
        self.num_images += int(st["num_images"])

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.reset()
        self.merge(state)

    # -- metrics ------------------------------------------------------------------------
    def pq_stat(self) -> Dict[int, Dict[str, float]]:
        """Per-category raw sums ``{cat_id: {iou, tp, fp, fn}}``."""
        return {int(c): {"iou": float(self.iou[i]), "tp": int(self.tp[i]), "fp": int(self.fp[i]),
                         "fn": int(self.fn[i])} for i, c in enumerate(self.cat_ids)}

    def _average(self, isthing: Optional[bool]) -> Tuple[Dict[str, Any], Dict[int, Dict[str, float]]]:
        pq = sq = rq = 0.0
        n = 0
        per_class: Dict[int, Dict[str, float]] = {}
        for i, c in enumerate(self.cat_ids):
            if isthing is not None and bool(self.isthing[i]) != isthing:
                continue
            tp, fp, fn, iou = int(self.tp[i]), int(self.fp[i]), int(self.fn[i]), float(self.iou[i])
            if tp + fp + fn == 0:
                per_class[int(c)] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            res = {"pq": iou / denom, "sq": iou / tp if tp else 0.0, "rq": tp / denom}
            per_class[int(c)] = res
            pq, sq, rq = pq + res["pq"], sq + res["sq"], rq + res["rq"]
        if n == 0:
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class

    def compute_raw(self) -> Dict[str, Any]:
        """Same structure and values (fractions) as ``pq_compute``'s return value."""
        results: Dict[str, Any] = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            results[name], per_class = self._average(isthing)
            if name == "All":
                results["per_class"] = per_class
        return results

    def compute(self) -> Dict[str, float]:
        """detectron2-style flat dict in percent, plus ``PQ-<name>``/``SQ-``/``RQ-`` per class."""
        raw = self.compute_raw()
        res: Dict[str, float] = {}
        for key, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for m in ("pq", "sq", "rq"):
                res[m.upper() + suffix] = 100 * raw[key][m]
        for cid, r in raw["per_class"].items():
            name = self.categories[cid].get("name", str(cid))
            for m in ("pq", "sq", "rq"):
                res[f"{m.upper()}-{name}"] = 100 * r[m]
        return res


def evaluate_coco_panoptic(
    gt_json: Union[str, os.PathLike, Mapping[str, Any]],
    gt_folder: Union[str, os.PathLike],
    pred_json: Union[str, os.PathLike, Mapping[str, Any]],
    pred_folder: Union[str, os.PathLike],
    unknown_category: str = "raise",
) -> PanopticEvaluator:
    """Evaluate COCO-panoptic PNG + JSON pairs from disk, as ``pq_compute`` does.

    Categories come from the gt JSON; every gt image needs a prediction.
    """
    gt = _load_json(gt_json)
    pred = _load_json(pred_json)
    ev = PanopticEvaluator(gt["categories"], unknown_category=unknown_category)
    preds = {a["image_id"]: a for a in pred["annotations"]}
    for gt_ann in gt["annotations"]:
        if gt_ann["image_id"] not in preds:
            raise KeyError(f"no prediction for the image with id: {gt_ann['image_id']}")
        p_ann = preds[gt_ann["image_id"]]
        ev.update(
            read_panoptic_png(os.path.join(pred_folder, p_ann["file_name"])),
            p_ann["segments_info"],
            read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"])),
            gt_ann["segments_info"],
        )
    return ev
