"""Cityscapes instance AP: ``mask2former evaluate`` against cityscapesscripts' own command-line
entry point (its file discovery, its ground-truth cache, its JSON export) on the same
predictions; and the detection-style instance confusion matrix."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

pytest.importorskip("cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling")

from mask2former.evaluation.cityscapes_instance import CityscapesInstanceEvaluator  # noqa: E402
from mask2former.evaluation.confusion import InstanceConfusion  # noqa: E402

H, W = 96, 160
THINGS = {24: "person", 25: "rider", 26: "car", 33: "bicycle"}  # label ids used here
CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]  # cityscapes_instance order
STEMS = [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"), ("bochum", "bochum_000000_000313")]


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """instanceIds map (road, sky, void, a car group, a caravan) and its evaluated instances."""
    ids = np.full((H, W), 7, np.uint16)  # road
    ids[:20] = 23  # sky
    ids[-6:] = 1  # ego vehicle: void
    ids[20:30, 130:150] = 26  # a car group (crowd)
    ids[20:28, 100:120] = 29000  # caravan: a thing that is not evaluated
    instances = []
    count: dict[int, int] = {}
    for _ in range(7):
        label = int(rng.choice(list(THINGS)))
        y, x = int(rng.integers(30, H - 30)), int(rng.integers(0, W - 30))
        h, w = int(rng.integers(12, 24)), int(rng.integers(12, 28))
        v = label * 1000 + count.setdefault(label, 0)
        count[label] += 1
        ids[y:y + h, x:x + w] = v
    for v in np.unique(ids):
        if v >= 1000 and v // 1000 in THINGS:
            instances.append((int(v // 1000), ids == v))
    return ids, instances


def _predictions(rng: np.random.Generator, instances) -> list[tuple[int, np.ndarray, float]]:
    """Shifted copies (some with a wrong class, some missing), plus false positives."""
    out = []
    for label, mask in instances:
        if rng.random() < 0.15:
            continue
        shifted = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        if rng.random() < 0.2:
            label = int(rng.choice(list(THINGS)))
        out.append((label, shifted, float(np.round(rng.uniform(0.05, 1.0), 4))))
    for _ in range(2):
        m = np.zeros((H, W), bool)
        y, x = int(rng.integers(0, H - 20)), int(rng.integers(0, W - 20))
        m[y:y + 15, x:x + 15] = True
        out.append((int(rng.choice(list(THINGS))), m, float(np.round(rng.uniform(0.05, 1.0), 4))))
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A Cityscapes val split, our prediction files and the official-format ones (same masks)."""
    root = tmp_path_factory.mktemp("cs")
    rng = np.random.default_rng(3)
    ours, official = root / "pred", root / "results"
    for city, stem in STEMS:
        for sub in ("leftImg8bit/val", "gtFine/val"):
            os.makedirs(root / sub / city, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            root / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png")
        ids, instances = _scene(rng)
        Image.fromarray(ids).save(root / "gtFine/val" / city / f"{stem}_gtFine_instanceIds.png")
        preds = _predictions(rng, instances)
        os.makedirs(ours / city, exist_ok=True)
        os.makedirs(official / "masks", exist_ok=True)
        results, lines = [], []
        for i, (label, mask, score) in enumerate(preds):
            results.append({"category_id": CLASSES.index(THINGS[label]), "score": score, "segmentation": _rle(mask)})
            Image.fromarray(mask.astype(np.uint8) * 255).save(official / "masks" / f"{stem}_{i}.png")
            lines.append(f"masks/{stem}_{i}.png {label} {score}\n")
        (ours / city / f"{stem}_leftImg8bit_instances.json").write_text(json.dumps(results))
        (official / f"{stem}_pred.txt").write_text("".join(lines))
    return root


def _official(root, workdir) -> dict:
    """cityscapesscripts' main(): finds GT and predictions itself, writes its JSON export."""
    cache = str(workdir / "gt.json")  # its default cache lives inside the installed package
    # The same two numpy-2 fixes as ours, applied to the official module's main() in its own process.
    code = f"from mask2former.evaluation.cityscapes_instance import official_module; m = official_module(); " \
           f"m.args.gtInstancesFile = {cache!r}; m.main()"
    env = {**os.environ, "CITYSCAPES_DATASET": str(root), "CITYSCAPES_RESULTS": str(root / "results")}
    res = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    with open(root / "evaluationResults" / "resultInstanceLevelSemanticLabeling.json") as f:
        return json.load(f)["averages"]


def _same(a, b) -> bool:
    return (a is None or math.isnan(a)) and (b is None or math.isnan(b)) or abs(a - b) < 1e-9


def test_evaluate_equals_cityscapesscripts(tree, tmp_path):
    official = _official(tree, tmp_path)
    res = subprocess.run([sys.executable, "-m", "mask2former.cli", "evaluate", "--dataset", "cityscapes_instance",
                          "--data-root", str(tree), "--predictions", str(tree / "pred"), "--json",
                          "--out", str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ours = json.loads(res.stdout.strip().splitlines()[-1])
    assert ours["convention"] == "cityscapes_instance" and "evalInstanceLevelSemanticLabeling" in res.stdout
    assert 5 < ours["AP"] < 95  # a real mix of hits, misses, confusions and false positives
    assert _same(ours["AP"], 100 * official["allAp"]) and _same(ours["AP50"], 100 * official["allAp50%"])
    for name in CLASSES:
        per = official["classes"][name]
        assert _same(ours[f"AP-{name}"], None if per["ap"] is None else 100 * per["ap"]), name
        assert _same(ours[f"AP50-{name}"], None if per["ap50%"] is None else 100 * per["ap50%"]), name
    header = (tmp_path / "report" / "per_class.csv").read_text().splitlines()[0]
    assert header == "class_id,class_name,AP,AP50,gt_instances,predictions"
    with Image.open(tmp_path / "report" / "confusion_matrix.png") as im:
        assert im.format == "PNG"
    # nothing left behind: no matches.json in the working directory, no GT cache in the package
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as module

    assert not os.path.exists(module.args.gtInstancesFile) and not os.path.exists("matches.json")
    coco = subprocess.run([sys.executable, "-m", "mask2former.cli", "evaluate", "--dataset", "cityscapes_instance",
                           "--data-root", str(tree), "--predictions", str(tree / "pred"), "--json",
                           "--convention", "detectron2"], capture_output=True, text=True, timeout=300)
    assert json.loads(coco.stdout.strip().splitlines()[-1])["convention"] == "coco"


def test_api_perfect_predictions_score_100_and_ranks_merge(tree):
    def evaluator():
        return CityscapesInstanceEvaluator({CLASSES.index(n): k for k, n in THINGS.items()},
                                           {CLASSES.index(n): n for n in THINGS.values()})

    whole, ranks = evaluator(), [evaluator(), evaluator()]
    for k, (city, stem) in enumerate(STEMS):
        gt = tree / "gtFine/val" / city / f"{stem}_gtFine_instanceIds.png"
        ids = np.asarray(Image.open(gt))
        vals = [v for v in np.unique(ids) if v >= 1000 and v // 1000 in THINGS]
        args = (str(gt), np.stack([ids == v for v in vals]), [1.0] * len(vals),
                [CLASSES.index(THINGS[v // 1000]) for v in vals])
        whole.update(*args)
        ranks[k % 2].update(*args)
    out = whole.compute()
    assert out["AP"] == out["AP50"] == 100.0 and out["AP-car"] == 100.0
    ranks[0].merge(ranks[1].state())
    assert ranks[0].compute() == out


def _rle(mask: np.ndarray) -> dict:
    """A compressed RLE as 'segment' writes it (JSON-able string counts)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {**rle, "counts": rle["counts"].decode("ascii")}


def test_instance_confusion_counts():
    def box(y, x, h=10, w=10):
        m = np.zeros((40, 60), bool)
        m[y:y + h, x:x + w] = True
        return _rle(m)

    gt = [{"category_id": 0, "segmentation": box(0, 0)},       # car: found
          {"category_id": 1, "segmentation": box(0, 20)},      # person: predicted as car
          {"category_id": 1, "segmentation": box(20, 0)},      # person: missed
          {"category_id": 0, "segmentation": box(20, 30, 20, 30), "iscrowd": 1}]
    preds = [{"category_id": 0, "score": 0.9, "segmentation": box(1, 0)},
             {"category_id": 0, "score": 0.8, "segmentation": box(0, 21)},
             {"category_id": 1, "score": 0.7, "segmentation": box(25, 35)},   # inside the crowd: ignored
             {"category_id": 2, "score": 0.6, "segmentation": box(0, 45)},    # nothing there
             {"category_id": 1, "score": 0.2, "segmentation": box(20, 0)}]    # below the score threshold
    cm = InstanceConfusion(3)
    cm.update(gt, preds, 40, 60)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = expected[1, 0] = expected[1, 3] = expected[3, 2] = 1
    np.testing.assert_array_equal(cm.matrix, expected)
    cm.update([], [], 40, 60)  # an empty image changes nothing
    np.testing.assert_array_equal(cm.matrix, expected)


def test_mask_of_the_wrong_size_is_one_clear_error(tree, tmp_path):
    pred = tmp_path / "pred"
    city, stem = STEMS[0]
    os.makedirs(pred / city)
    (pred / city / f"{stem}_leftImg8bit_instances.json").write_text(json.dumps(
        [{"category_id": 2, "score": 0.9, "segmentation": _rle(np.ones((H // 2, W // 2), bool))}]))
    res = subprocess.run([sys.executable, "-m", "mask2former.cli", "evaluate", "--dataset", "cityscapes_instance",
                          "--data-root", str(tree), "--predictions", str(pred), "--limit", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and f"{stem}_leftImg8bit: predicted mask is {W // 2}x{H // 2}" in errors[0], res.stderr
