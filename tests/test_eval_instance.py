"""InstanceEvaluator end to end vs the standard pycocotools flow on JSON files
(COCO(gt.json) -> loadRes(results.json) -> COCOeval 'segm')."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.evaluation.instance import METRICS, InstanceEvaluator, encode_masks

CATS = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}, {"id": 7, "name": "c"},
        {"id": 10, "name": "ghost"}, {"id": 11, "name": "never_predicted"}]
# ghost: predicted, never in GT (AP NaN); never_predicted: GT only (AP 0)


def _rect(h, w, y0, x0, hh, ww):
    m = np.zeros((h, w), np.uint8)
    m[y0:y0 + hh, x0:x0 + ww] = 1
    return m


def _uncompressed_rle(mask):
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def _make_data(seed, n_images=6):
    rng = np.random.default_rng(seed)
    images, gt_anns, preds = [], [], []  # preds: (image_id, masks, scores, label indices)
    for img_id in range(1, n_images + 1):
        h, w = (int(v) for v in rng.integers(120, 240, size=2))
        images.append({"id": img_id, "height": h, "width": w})
        masks, scores, labels = [], [], []
        for _ in range(int(rng.integers(0, 8))):
            side = int(rng.choice([8, 20, 40, 110]))  # small / medium / large objects
            hh, ww = min(side + int(rng.integers(0, 10)), h - 2), min(side, w - 2)
            y0, x0 = int(rng.integers(0, h - hh)), int(rng.integers(0, w - ww))
            cat_i = int(rng.choice([0, 1, 2, 4]))
            m = _rect(h, w, y0, x0, hh, ww)
            ann = {"image_id": img_id, "category_id": CATS[cat_i]["id"], "iscrowd": 0}
            kind = rng.random()
            if kind < 0.4:  # polygon, with the polygon's own area (as COCO JSON has)
                ann["segmentation"] = [[x0, y0, x0 + ww, y0, x0 + ww, y0 + hh, x0, y0 + hh]]
                ann["area"] = float(ww * hh)
            elif kind < 0.85:
                rle = mask_util.encode(np.asfortranarray(m))
                ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                ann["area"] = float(m.sum())
            else:  # crowd region, uncompressed RLE as in COCO
                ann["segmentation"] = _uncompressed_rle(m)
                ann["iscrowd"] = 1
                ann["area"] = float(m.sum())
            gt_anns.append(ann)
            for _ in range(int(rng.choice([0, 1, 1, 2]))):  # missed, found, duplicated
                dy, dx = rng.integers(-4, 5, size=2)
                pm = np.roll(np.roll(m, dy, 0), dx, 1)
                masks.append(pm)
                scores.append(float(rng.random()))
                right = cat_i != 4 and rng.random() < 0.85
                labels.append(cat_i if right else int(rng.choice([0, 1, 2, 3])))
        n_fp = 110 if img_id == 2 else int(rng.integers(0, 4))  # image 2: over maxDets=100
        for _ in range(n_fp):
            masks.append(_rect(h, w, int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12)), 10, 12))
            scores.append(float(rng.random()) * 0.5)
            labels.append(int(rng.choice([0, 1, 2, 3])))
        masks = np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)
        preds.append((img_id, masks, np.array(scores), np.array(labels, dtype=np.int64)))
    return images, gt_anns, preds


def _reference(images, gt_anns, preds, tmp_path):
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    anns = [dict(a, id=i + 1) for i, a in enumerate(gt_anns)]
    gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    results = []
    for img_id, masks, scores, labels in preds:
        for m, s, lab in zip(masks, scores, labels):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": img_id, "category_id": CATS[lab]["id"],
                            "segmentation": rle, "score": float(s)})
    res_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(res_file)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {m: ev.stats[i] * 100 if ev.stats[i] >= 0 else math.nan for i, m in enumerate(METRICS)}
    for k, cid in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        out["AP-" + next(c["name"] for c in CATS if c["id"] == cid)] = p.mean() * 100 if p.size else math.nan
    return out


def _same(a, b, tol=1e-9):
    assert set(a) == set(b)
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or abs(a[k] - b[k]) <= tol, (k, a[k], b[k])


def _fill(ev, images, gt_anns, preds, torch_masks=False):
    for im in images:
        ev.add_ground_truth(im["id"], im["height"], im["width"],
                            annotations=[a for a in gt_anns if a["image_id"] == im["id"]])
    for img_id, masks, scores, labels in preds:
        if torch_masks:
            masks = torch.from_numpy(masks).bool()
            scores, labels = torch.from_numpy(scores), torch.from_numpy(labels)
        ev.update(img_id, masks, scores, labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pycocotools_on_json_files(seed, tmp_path):
    images, gt_anns, preds = _make_data(seed)
    want = _reference(images, gt_anns, preds, tmp_path)
    ev = InstanceEvaluator(CATS)
    _fill(ev, images, gt_anns, preds, torch_masks=bool(seed))
    got = ev.compute()
    _same(got, want)
    assert math.isnan(got["AP-ghost"]) and got["AP-never_predicted"] == 0.0
    assert 0 < got["AP"] < 100
    # memory: only RLEs are stored
    assert all(isinstance(r["segmentation"]["counts"], str) for r in ev.results)


def test_merge_across_ranks(tmp_path):
    images, gt_anns, preds = _make_data(2)
    whole = InstanceEvaluator(CATS)
    _fill(whole, images, gt_anns, preds)
    ranks = [InstanceEvaluator(CATS) for _ in range(2)]
    for r, ev in enumerate(ranks):
        _fill(ev, images[r::2], gt_anns, preds[r::2])
    ranks[0].merge(ranks[1].state())
    _same(ranks[0].compute(), whole.compute())
    with pytest.raises(ValueError):
        ranks[0].merge(ranks[1])  # the same images twice


def test_perfect_predictions_and_mask_ground_truth():
    rng = np.random.default_rng(3)
    ev = InstanceEvaluator([c["id"] for c in CATS[:3]])
    for img_id in range(3):
        masks = np.stack([_rect(150, 160, int(rng.integers(0, 50)), int(rng.integers(0, 50)), s, s)
                          for s in (10, 40, 100)])  # small, medium, large
        labels = np.array([0, 1, 2])
        ev.add_ground_truth(img_id, 150, 160, masks=masks, labels=labels)
        ev.update(img_id, masks, np.array([0.9, 0.8, 0.7]), labels)
    res = ev.compute()
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP-1", "AP-3", "AP-7"):
        assert res[k] == pytest.approx(100.0), k


def test_no_predictions_and_missing_ground_truth():
    ev = InstanceEvaluator(CATS)
    ev.add_ground_truth(1, 10, 10, masks=_rect(10, 10, 0, 0, 4, 4)[None], labels=[0])
    assert all(math.isnan(v) for v in ev.compute().values())
    ev.update(2, _rect(10, 10, 0, 0, 4, 4)[None], [0.5], [0])
    with pytest.raises(ValueError):
        ev.compute()


def test_encode_masks_roundtrip():
    m = np.random.default_rng(0).random((3, 17, 9)) > 0.5
    rles = encode_masks(torch.from_numpy(m))
    assert np.array_equal(mask_util.decode(rles).transpose(2, 0, 1), m)
