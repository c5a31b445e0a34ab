"""Metric accumulation, ours vs the reference implementations, same random data, one run.

    python benchmarks/evaluate.py [--size 1024 2048] [--images 4] [--segments 80] [--repeats 3]

PQ: our PanopticEvaluator vs ``pq_compute_single_core`` of cityscapesscripts'
evalPanopticSemanticLabeling (panopticapi's per-image loop, copied there verbatim).
mIoU: our SemanticEvaluator (cityscapes convention) vs cityscapesscripts'
evalPixelLevelSemanticLabeling ``evaluatePair`` (its numpy path: the Cython helper is not
built by pip) and vs a naive loop over classes.

Both sides start from decoded arrays: the references' ``Image.open`` is replaced by a lookup
in memory, so PNG decoding (identical on both sides) is not timed. PQ inputs are the panoptic
PNGs' RGB arrays on both sides (we include our rgb2id). Semantic: cityscapesscripts reads
label ids; we read train ids (what our dataset readers and models produce), and the
id -> train id lookup is timed separately. Best of ``repeats``; numbers must be equal.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import time
from typing import Any, Callable

import numpy as np

from mask2former.evaluation import PanopticEvaluator, SemanticEvaluator, id2rgb, rgb2id


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def voronoi(rng: np.random.Generator, h: int, w: int, seeds: np.ndarray, factor: int = 8) -> np.ndarray:
    """Cell index per pixel, computed at 1/factor resolution and repeated (cheap, blocky)."""
    sh, sw = -(-h // factor), -(-w // factor)
    yy, xx = np.mgrid[:sh, :sw].astype(np.float32)
    small = np.full((sh, sw), 0, dtype=np.int64)
    best = np.full((sh, sw), np.inf, dtype=np.float32)
    for k, (y, x) in enumerate(seeds / factor):
        d = (yy - y) ** 2 + (xx - x) ** 2
        small[d < best], best = k, np.minimum(best, d)
    return np.repeat(np.repeat(small, factor, 0), factor, 1)[:h, :w]


# -- panoptic -----------------------------------------------------------------------------

CATEGORIES = [{"id": i, "name": f"c{i}", "isthing": int(i >= 11)} for i in range(19)]  # Cityscapes-like


def panoptic_pair(rng: np.random.Generator, h: int, w: int, n: int) -> tuple[np.ndarray, list, np.ndarray, list]:
    """GT cells (some VOID, some crowd) and a jittered prediction with some wrong classes."""
    seeds = rng.uniform(0, [h, w], size=(n, 2))
    cells = voronoi(rng, h, w, seeds)
    cats = rng.integers(0, 19, size=n)
    gt_ids = np.zeros((h, w), np.int64)
    gt_segs = []
    for k in range(n):
        if rng.random() < 0.08:
            continue  # VOID
        sid = int(cats[k]) * 1000 + k + 1
        gt_ids[cells == k] = sid
        gt_segs.append({"id": sid, "category_id": int(cats[k]), "iscrowd": int(cats[k] >= 11 and rng.random() < 0.1)})
    p_cells = voronoi(rng, h, w, seeds + rng.normal(0, 12, seeds.shape))
    pred_ids = np.zeros((h, w), np.int64)
    pred_segs = []
    for k in range(n):
        if rng.random() < 0.05 or not (p_cells == k).any():
            continue
        cat = int(cats[k]) if rng.random() > 0.15 else int(rng.integers(0, 19))
        pred_ids[p_cells == k] = 7 * k + 3
        pred_segs.append({"id": 7 * k + 3, "category_id": cat})
    for s in gt_segs:
        s["area"] = int((gt_ids == s["id"]).sum())
    return pred_ids, pred_segs, gt_ids, gt_segs


def bench_panoptic(size: tuple[int, int], images: int, segments: int, repeats: int) -> dict[str, Any]:
    import cityscapesscripts.evaluation.evalPanopticSemanticLabeling as ref

    rng = np.random.default_rng(0)
    data = [panoptic_pair(rng, *size, segments) for _ in range(images)]
    arrays = {}
    anns = []
    for i, (p_ids, p_segs, g_ids, g_segs) in enumerate(data):
        arrays[f"gt/{i}.png"], arrays[f"pred/{i}.png"] = id2rgb(g_ids), id2rgb(p_ids)
        anns.append(({"image_id": i, "file_name": f"{i}.png", "segments_info": g_segs},
                     {"image_id": i, "file_name": f"{i}.png", "segments_info": p_segs}))
    cats = {c["id"]: c for c in CATEGORIES}
    original = ref.Image
    ref.Image = type("InMemory", (), {"open": staticmethod(lambda path: arrays[path])})
    try:
        def reference() -> Any:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
                return ref.pq_compute_single_core(0, copy.deepcopy(anns), "gt", "pred", cats)

        t_ref, stat = best_of(reference, repeats)
    finally:
        ref.Image = original

    def ours() -> PanopticEvaluator:
        ev = PanopticEvaluator(CATEGORIES)
        for i, (_, p_segs, _, g_segs) in enumerate(data):
            ev.update(rgb2id(arrays[f"pred/{i}.png"]), p_segs, rgb2id(arrays[f"gt/{i}.png"]), g_segs)
        return ev

    t_ours, ev = best_of(ours, repeats)
    want, got = ref.average_pq(stat, cats), ev.compute_raw()
    equal = all(abs(got[k][m] - want[k][m]) <= 1e-12 for k in ("All", "Things", "Stuff") for m in ("pq", "sq", "rq"))
    equal &= all((s["tp"], s["fp"], s["fn"]) == (stat[c].tp, stat[c].fp, stat[c].fn) and abs(s["iou"] - stat[c].iou)
                 <= 1e-9 for c, s in ev.pq_stat().items())
    return {"metric": "PQ", "reference": "cityscapesscripts pq_compute_single_core", "reference_s": t_ref,
            "ours_s": t_ours, "speedup": t_ref / t_ours, "equal": bool(equal), "PQ": 100 * got["All"]["pq"]}


# -- semantic -----------------------------------------------------------------------------


def label_tables() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from cityscapesscripts.helpers.labels import labels

    ids = np.array([lab.id for lab in labels if lab.id >= 0])
    to_train = np.full(256, 255, dtype=np.uint8)
    for lab in labels:
        if lab.id >= 0:
            to_train[lab.id] = lab.trainId if lab.trainId < 255 else 255
    names = {lab.trainId: lab.name for lab in labels if not lab.ignoreInEval}
    return ids, to_train, [names[t] for t in range(19)]


def semantic_pair(rng: np.random.Generator, h: int, w: int, n: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label-id maps: GT cells; prediction = jittered cells, ~10% of them another label."""
    seeds = rng.uniform(0, [h, w], size=(n, 2))
    cell_label = rng.choice(ids, size=n).astype(np.uint8)
    gt = cell_label[voronoi(rng, h, w, seeds)]
    pred_label = np.where(rng.random(n) < 0.1, rng.choice(ids, size=n), cell_label).astype(np.uint8)
    pred = pred_label[voronoi(rng, h, w, seeds + rng.normal(0, 12, seeds.shape))]
    return pred, gt


def naive_miou(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int = 19) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) by one boolean pass per class (ignore = 255)."""
    tp, fp, fn = (np.zeros(num_classes, np.int64) for _ in range(3))
    for pred, gt in pairs:
        valid = gt != 255
        for c in range(num_classes):
            p, g = (pred == c) & valid, gt == c
            tp[c] += np.count_nonzero(p & g)
            fp[c] += np.count_nonzero(p & ~g)
            fn[c] += np.count_nonzero(~p & g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fp + fn)


def bench_semantic(size: tuple[int, int], images: int, segments: int, repeats: int) -> list[dict[str, Any]]:
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs

    ids, to_train, names = label_tables()
    rng = np.random.default_rng(1)
    pairs = [semantic_pair(rng, *size, segments, ids) for _ in range(images)]
    train_pairs = [(to_train[p], to_train[g]) for p, g in pairs]
    arrays = {}
    for i, (p, g) in enumerate(pairs):
        arrays[f"p{i}"], arrays[f"g{i}"] = p, g

    class Loaded:  # what evaluatePair needs of a PIL image: .size and np.array()
        def __init__(self, a: np.ndarray) -> None:
            self.a, self.size = a, (a.shape[1], a.shape[0])

        def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
            return self.a

    args = copy.copy(cs.args)
    args.quiet, args.evalInstLevelScore, args.evalPixelAccuracy = True, False, False
    original = cs.Image
    cs.Image = type("InMemory", (), {"open": staticmethod(lambda path: Loaded(arrays[path]))})
    try:
        def reference() -> np.ndarray:
            conf = cs.generateMatrix(args)
            for i in range(len(pairs)):
                cs.evaluatePair(f"p{i}", f"g{i}", conf, None, {}, args)
            return conf

        t_ref, conf = best_of(reference, repeats)
    finally:
        cs.Image = original
    by_name = {cs.id2label[lab].name: cs.getIouScoreForLabel(lab, conf, args) for lab in args.evalLabels}
    want = np.array([by_name[n] for n in names])

    def ours() -> SemanticEvaluator:
        ev = SemanticEvaluator(19, 255, names, "cityscapes")
        for p, g in train_pairs:
            ev.update(p, g)
        return ev

    t_ours, ev = best_of(ours, repeats)
    t_map, _ = best_of(lambda: [(np.take(to_train, p), np.take(to_train, g)) for p, g in pairs], repeats)
    got = ev.compute_raw()["IoU"]
    t_naive, naive = best_of(lambda: naive_miou(train_pairs), repeats)
    same = lambda a, b: bool(np.allclose(a, b, rtol=0, atol=1e-12, equal_nan=True))  # noqa: E731
    miou = 100 * float(np.nanmean(got))
    return [{"metric": "mIoU", "reference": "cityscapesscripts evaluatePair (numpy path)", "reference_s": t_ref,
             "ours_s": t_ours, "ours_with_id_lookup_s": t_ours + t_map, "speedup": t_ref / t_ours,
             "speedup_with_id_lookup": t_ref / (t_ours + t_map), "equal": same(got, want), "mIoU": miou},
            {"metric": "mIoU", "reference": "naive per-class loop", "reference_s": t_naive, "ours_s": t_ours,
             "speedup": t_naive / t_ours, "equal": same(got, naive), "mIoU": miou}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", nargs=2, type=int, default=[1024, 2048], metavar=("H", "W"))
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--segments", type=int, default=80, help="segments (cells) per image")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    size = tuple(a.size)
    rows = [bench_panoptic(size, a.images, a.segments, a.repeats), *bench_semantic(size, a.images, a.segments,
                                                                                   a.repeats)]
    for r in rows:
        extra = f", {r['speedup_with_id_lookup']:.1f}x counting the id->trainId lookup" \
            if "speedup_with_id_lookup" in r else ""
        print(f"{r['metric']:>4} {size[0]}x{size[1]} x{a.images}: {r['reference']} {r['reference_s']:.3f}s, "
              f"ours {r['ours_s']:.3f}s -> reference/ours = {r['speedup']:.1f}x{extra}; numbers equal: {r['equal']}")
    print(json.dumps(rows))
    if not all(r["equal"] for r in rows):
        raise SystemExit("numbers differ from the reference")


if __name__ == "__main__":
    main()
