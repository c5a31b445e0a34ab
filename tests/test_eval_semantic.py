"""SemanticEvaluator vs cityscapesscripts (real oracle) and vs an independent
per-class loop written from detectron2's SemSegEvaluator (current and v0.6)."""
import copy
import math

import numpy as np
import pytest
import torch

from mask2former.evaluation.semantic import SemanticEvaluator

C = 7
IGNORE = 255


def _random_pairs(seed, n_images=6, invalid_values=(C,)):
    """Random pred/gt pairs with: a class only predicted (5), a class nowhere (6),
    ignore pixels, an image with only ignore, and invalid prediction values."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n_images):
        h, w = rng.integers(5, 40, size=2)
        gt = rng.choice([0, 1, 2, 3, 4, IGNORE], size=(h, w), p=[.3, .2, .2, .1, .1, .1])
        if i == 2:
            gt[:] = IGNORE
        pred = np.where(rng.random((h, w)) < 0.6, np.where(gt == IGNORE, 0, gt),
                        rng.choice([0, 1, 2, 3, 5], size=(h, w)))
        if i == 0:
            pred[rng.random((h, w)) < 0.1] = 4  # still a valid class
        if invalid_values:
            bad = rng.random((h, w)) < 0.05
            pred[bad] = rng.choice(invalid_values, size=int(bad.sum()))
        pairs.append((pred.astype(np.int64), gt.astype(np.int64)))
    return pairs


def _brute_force(pairs, convention):
    """Per-class loops over masks, then the formulas of detectron2's evaluate()."""
    tp, pos_gt, pos_pred = np.zeros(C), np.zeros(C), np.zeros(C)
    for pred, gt in pairs:
        valid = (gt != IGNORE) & (pred >= 0) & (pred < C)  # detectron2 drops both
        for c in range(C):
            tp[c] += np.count_nonzero(valid & (pred == c) & (gt == c))
            pos_gt[c] += np.count_nonzero(valid & (gt == c))
            pos_pred[c] += np.count_nonzero(valid & (pred == c))
    iou, acc = [math.nan] * C, [math.nan] * C
    for c in range(C):
        if pos_gt[c] > 0:
            acc[c] = tp[c] / pos_gt[c]
            iou[c] = tp[c] / (pos_gt[c] + pos_pred[c] - tp[c])
    with_gt = [c for c in range(C) if pos_gt[c] > 0]
    if convention == "detectron2":
        miou = sum(iou[c] for c in with_gt) / len(with_gt)
    else:  # v0.6: divide by classes present in GT or prediction
        miou = sum(iou[c] for c in with_gt) / sum(1 for c in range(C) if pos_gt[c] + pos_pred[c] > 0)
    total = pos_gt.sum()
    return {
        "mIoU": 100 * miou,
        "fwIoU": 100 * sum(pos_gt[c] / total * iou[c] for c in with_gt),
        "mACC": 100 * sum(acc[c] for c in with_gt) / len(with_gt),
        "pACC": 100 * tp.sum() / total,
        "IoU": [100 * v for v in iou],
        "ACC": [100 * v for v in acc],
    }


def _close(a, b, tol=1e-9):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


@pytest.mark.parametrize("convention", ["detectron2", "detectron2_v0.6"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_detectron2_formulas(convention, seed):
    # invalid predictions: C (what detectron2 itself would drop), larger values, negatives
    pairs = _random_pairs(seed, invalid_values=(C, C + 3, 200, -1))
    ev = SemanticEvaluator(C, IGNORE, absent_class_convention=convention)
    for pred, gt in pairs:
        ev.update(pred, gt)
    res, ref = ev.compute(), _brute_force(pairs, convention)
    assert res["absent_class_convention"] == convention
    for k in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert _close(res[k], ref[k]), (k, res[k], ref[k])
    for c in range(C):
        assert _close(res[f"IoU-{c}"], ref["IoU"][c])
        assert _close(res[f"ACC-{c}"], ref["ACC"][c])
    assert math.isnan(res["IoU-5"]) and math.isnan(res["IoU-6"])  # no GT pixels


def test_conventions_on_hand_example():
    gt = np.array([[0, 0, 0, 1]])
    pred = np.array([[0, 0, 2, 1]])  # class 2 predicted, absent from GT; class 3 nowhere
    out = {}
    for conv in ("detectron2", "detectron2_v0.6", "cityscapes"):
        ev = SemanticEvaluator(4, absent_class_convention=conv)
        ev.update(pred, gt)
        out[conv] = ev.compute()
    assert out["detectron2"]["mIoU"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert out["detectron2_v0.6"]["mIoU"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert out["cityscapes"]["mIoU"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert math.isnan(out["detectron2_v0.6"]["IoU-2"]) and out["cityscapes"]["IoU-2"] == 0.0
    assert all(math.isnan(o["IoU-3"]) for o in out.values())
    for o in out.values():
        assert o["pACC"] == pytest.approx(75.0) and o["mACC"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def _cityscapes_reference(pairs_labelid, tmp_path):
    from PIL import Image

    cs = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

    preds, gts = [], []
    for i, (pred, gt) in enumerate(pairs_labelid):
        p, g = str(tmp_path / f"p{i}.png"), str(tmp_path / f"g{i}.png")
        Image.fromarray(pred.astype(np.uint8)).save(p)
        Image.fromarray(gt.astype(np.uint8)).save(g)
        preds.append(p)
        gts.append(g)
    args = copy.copy(cs.args)
    args.quiet, args.JSONOutput = True, False
    args.evalInstLevelScore, args.evalPixelAccuracy = False, False
    return cs.evaluateImgLists(preds, gts, args)


@pytest.mark.parametrize("seed", [0, 3])
def test_matches_cityscapesscripts(seed, tmp_path):
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels

    rng = np.random.default_rng(seed)
    label_ids = np.array([lab.id for lab in labels if lab.id >= 0])
    id2train = np.full(256, 255, dtype=np.int64)
    for lab in labels:
        if lab.id >= 0:
            id2train[lab.id] = lab.trainId
    names = {lab.trainId: lab.name for lab in labels if not lab.ignoreInEval}
    # GT never contains 'train' (31) or 'bus' (28); predictions sometimes do: the
    # predicted-but-absent case.  'bicycle' (33) appears nowhere.
    gt_choices = np.setdiff1d(label_ids, [28, 31, 33])
    pred_choices = np.setdiff1d(label_ids, [33])
    pairs = []
    for i in range(4):
        h, w = rng.integers(10, 50, size=2)
        gt = rng.choice(gt_choices, size=(h, w))
        pred = np.where(rng.random((h, w)) < 0.5, gt, rng.choice(pred_choices, size=(h, w)))
        pairs.append((pred, gt))
    ref = _cityscapes_reference(pairs, tmp_path)

    ev = SemanticEvaluator(19, 255, class_names=[names[t] for t in range(19)],
                           absent_class_convention="cityscapes")
    for pred, gt in pairs:
        # ignored-in-eval label ids: GT -> ignore, prediction -> an invalid value (255)
        ev.update(id2train[pred], id2train[gt])
    res = ev.compute()
    for t in range(19):
        assert _close(res[f"IoU-{names[t]}"], 100 * ref["classScores"][names[t]]), names[t]
    assert res["IoU-train"] == 0.0 and math.isnan(res["IoU-bicycle"])
    assert _close(res["mIoU"], 100 * ref["averageScoreClasses"])


def test_merge_state_and_torch_inputs():
    pairs = _random_pairs(5)
    whole = SemanticEvaluator(C)
    a, b = SemanticEvaluator(C), SemanticEvaluator(C)
    for i, (pred, gt) in enumerate(pairs):
        whole.update(torch.from_numpy(pred), torch.from_numpy(gt).to(torch.uint8))
        (a if i % 2 else b).update(pred, gt)
    a.merge(b.state())
    assert np.array_equal(a.conf_matrix, whole.conf_matrix)
    c = SemanticEvaluator(C)
    c.load_state(a.state())
    assert c.compute() == pytest.approx(whole.compute(), nan_ok=True)
    assert whole.conf_matrix.sum() == sum(p.size for p, _ in pairs)


def test_bad_ground_truth_raises():
    ev = SemanticEvaluator(3)
    with pytest.raises(ValueError):
        ev.update(np.zeros((2, 2), int), np.full((2, 2), 7))
    with pytest.raises(ValueError):
        ev.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"\[7\]"):  # the fast path names the bad values too
        ev.update(np.zeros((2, 2), np.uint8), np.array([[7, 0], [255, 1]], np.uint8))
    assert ev.conf_matrix.sum() == 0  # nothing of a rejected image is counted


@pytest.mark.parametrize("dtypes", [(np.uint8, np.uint8), (np.int64, np.int64), (np.int32, np.uint16),
                                    (np.int8, np.int64), (bool, np.uint8)])
def test_joint_histogram_equals_direct_counting(dtypes):
    """The fast path (one joint histogram of value pairs) against per-pixel labelling, with
    invalid predictions (negative, >= C), ignore, and odd value offsets."""
    rng = np.random.default_rng(7)
    for lo, hi in [(0, C + 3), (2, C), (-3, C + 2), (1, 2)]:
        pred = rng.integers(max(lo, -128 if dtypes[0] == np.int8 else lo), hi, size=(37, 53))
        gt = rng.choice([1, 2, 3, 4, IGNORE], size=(37, 53))
        if dtypes[0] is bool:
            pred = pred % 2
        pred, gt = pred.astype(dtypes[0]), gt.astype(dtypes[1])
        fast, direct = SemanticEvaluator(C), SemanticEvaluator(C)
        fast.update(pred, gt)
        direct._update_by_label(pred, gt)
        assert np.array_equal(fast.conf_matrix, direct.conf_matrix)
    wide = SemanticEvaluator(C)  # a value range too wide for the histogram: the direct path
    wide.update(np.array([[0, 10**9]]), np.array([[0, 1]]))
    assert wide.conf_matrix[0, 0] == 1 and wide.conf_matrix[C, 1] == 1
