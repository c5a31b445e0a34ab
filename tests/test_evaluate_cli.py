"""``mask2former evaluate`` end to end on synthetic scenes with a tiny random-weight model:
the JSON line, the --out files, model runs equal to scoring 'segment' output files, and
ground-truth-derived predictions scoring 100."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mask2former.data import build_dataset, synthetic

THRESHOLD = "0.3"  # the random model's queries are not confident enough for the default 0.8


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    synthetic.generate(root, 0, 3, size=(64, 96), seed=0)
    return str(root)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.processor import Mask2FormerImageProcessor
    from mask2former.train.model_init import architecture_config

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    names = {i: c[0] for i, c in enumerate(synthetic.CLASSES)}
    model = Mask2FormerForUniversalSegmentation(architecture_config("tiny", names, {"num_queries": 10,
                                                                                    "decoder_layers": 3})).eval()
    with torch.no_grad():  # sharper scores and masks: several classes and segments get predicted
        model.transformer_decoder.class_embed.weight.mul_(30)
        for name, p in model.transformer_decoder.named_parameters():
            if "mask_embed" in name and p.dim() == 2:
                p.mul_(3)
    model.save_pretrained(folder)
    Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    (folder / "classes.json").write_text(json.dumps(synthetic.class_list()))  # things: car, person, sign
    return str(folder)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mask2former.cli", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def evaluate(data_root: str, *args: str) -> dict:
    res = cli("evaluate", "--dataset", "folder", "--data-root", data_root, "--json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def check_range(metrics: dict, keys) -> None:
    for k in keys:
        assert metrics[k] is None or 0.0 <= metrics[k] <= 100.0, k


@pytest.mark.parametrize("options", [[], ["--tta", "--tta-scales", "0.75", "1.0", "--sliding-window", "64", "64"]],
                         ids=["plain", "tta+sliding"])
def test_semantic_model_equals_segment_files(model_dir, data_root, tmp_path, options):
    out = tmp_path / "report"
    direct = evaluate(data_root, "--model", model_dir, "--task", "semantic", "--out", str(out), *options)
    seg = cli("segment", os.path.join(data_root, "images", "val"), "--model", model_dir, "--task", "semantic",
              "--out", str(tmp_path / "pred"), "--no-overlay", *options)
    assert seg.returncode == 0, seg.stderr
    from_files = evaluate(data_root, "--predictions", str(tmp_path / "pred"), "--task", "semantic")
    assert direct == from_files
    assert direct["task"] == "semantic" and direct["num_images"] == 3 and direct["convention"] == "detectron2"
    names = [c[0] for c in synthetic.CLASSES]
    check_range(direct, ["mIoU", "fwIoU", "mACC", "pACC"] + [f"IoU-{n}" for n in names] + [f"ACC-{n}" for n in names])
    # --out: the same metrics, one CSV row per class, a PNG
    assert json.loads((out / "metrics.json").read_text()) == direct
    rows = (out / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class_id,class_name,IoU,ACC,gt_pixels,pred_pixels" and len(rows) == 1 + len(names)
    with Image.open(out / "confusion_matrix.png") as im:
        assert im.format == "PNG" and min(im.size) > 100
    if not options:  # the command's pipeline against an in-process one
        from mask2former.evaluation import SemanticEvaluator
        from mask2former.segmenter import Segmenter

        ds = build_dataset("folder", data_root, "val")
        segmenter = Segmenter(model_dir, task="semantic", device="cpu")
        ev = SemanticEvaluator(8, 255, names)
        for i in range(len(ds)):
            ev.update(segmenter(ds[i]["image"]).labels, ds[i]["sem_seg"])
        assert direct["mIoU"] == pytest.approx(ev.compute()["mIoU"], abs=1e-12)
        assert len([n for n in names if (direct[f"IoU-{n}"] or 0) > 0]) >= 2  # several classes predicted


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_model_equals_segment_files(model_dir, data_root, tmp_path, task):
    res = cli("evaluate", "--dataset", "folder", "--data-root", data_root, "--model", model_dir, "--task", task,
              "--threshold", THRESHOLD, "--json", "--out", str(tmp_path / "direct"))
    assert res.returncode == 0, res.stderr
    direct = json.loads(res.stdout.strip().splitlines()[-1])
    seg = cli("segment", os.path.join(data_root, "images", "val"), "--model", model_dir, "--task", task,
              "--threshold", THRESHOLD, "--out", str(tmp_path / "pred"), "--no-overlay")
    assert seg.returncode == 0, seg.stderr
    # the task is read from the files
    assert evaluate(data_root, "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "files")) == direct
    # per class counts too (tp/fp/fn, instance and prediction counts), not only the averages
    table = (tmp_path / "direct" / "per_class.csv").read_text()
    assert table == (tmp_path / "files" / "per_class.csv").read_text()
    rows = [dict(zip(table.splitlines()[0].split(","), line.split(","))) for line in table.splitlines()[1:]]
    assert direct["task"] == task and direct["num_images"] == 3
    if task == "panoptic":
        check_range(direct, ["PQ", "SQ", "RQ", "PQ_th", "PQ_st", "PQ-road", "PQ-car"])
        assert "PQ_th" in res.stdout and "person" in res.stdout  # the table
        assert sum(int(r["FP"]) + int(r["TP"]) for r in rows) > 0  # segments were predicted
        assert sum(int(r["FN"]) for r in rows) > 0
        assert (tmp_path / "direct" / "confusion_matrix.png").is_file()
    else:
        check_range(direct, ["AP", "AP50", "AP75", "APs", "APm", "APl", "AP-car", "AP-person", "AP-sign"])
        assert "AP-road" not in direct and [r["class_name"] for r in rows] == ["car", "person", "sign"]
        assert sum(int(r["predictions"]) for r in rows) > 0 and sum(int(r["gt_instances"]) for r in rows) > 0
        assert (tmp_path / "direct" / "confusion_matrix.png").is_file()  # the detection-style one


def _write_ground_truth_predictions(data_root: str, pred: str) -> None:
    """What a perfect model would make 'segment' write, from the dataset's own ground truth."""
    from pycocotools import mask as mask_utils

    from mask2former.evaluation import id2rgb

    ds = build_dataset("folder", data_root, "val")
    annotations = []
    for i in range(len(ds)):
        s = ds[i]
        stem = os.path.splitext(os.path.basename(s["file_name"]))[0]
        os.makedirs(pred, exist_ok=True)
        Image.fromarray(s["sem_seg"].astype(np.uint8)).save(os.path.join(pred, f"{stem}_labels.png"))
        Image.fromarray(id2rgb(s["pan_seg"])).save(os.path.join(pred, f"{stem}_panoptic.png"))
        annotations.append({"image_id": stem, "file_name": f"{stem}_panoptic.png",
                            "segments_info": [{"id": g["id"], "category_id": g["category_id"]}
                                              for g in s["segments"]]})
        instances = []
        for g in s["segments"]:
            if g["isthing"] and not g["iscrowd"]:
                rle = mask_utils.encode(np.asfortranarray((s["pan_seg"] == g["id"]).astype(np.uint8)))
                instances.append({"image_id": stem, "category_id": g["category_id"], "score": 1.0,
                                  "segmentation": {**rle, "counts": rle["counts"].decode("ascii")}})
        with open(os.path.join(pred, f"{stem}_instances.json"), "w") as f:
            json.dump(instances, f)
    with open(os.path.join(pred, "panoptic.json"), "w") as f:
        json.dump({"annotations": annotations}, f)


def test_ground_truth_as_predictions_scores_100(data_root, tmp_path):
    pred = str(tmp_path / "perfect")
    _write_ground_truth_predictions(data_root, pred)
    sem = evaluate(data_root, "--predictions", pred, "--task", "semantic")
    assert sem["mIoU"] == sem["pACC"] == 100.0
    pan = evaluate(data_root, "--predictions", pred, "--task", "panoptic")
    assert pan["PQ"] == pan["SQ"] == pan["RQ"] == pan["PQ_th"] == pan["PQ_st"] == 100.0
    inst = evaluate(data_root, "--predictions", pred, "--task", "instance")
    assert inst["AP"] == inst["AP50"] == inst["AP75"] == 100.0


def _cityscapes_tree(root) -> None:
    """Two 32x64 Cityscapes-layout images in nested city folders (labelIds ground truth)."""
    rng = np.random.default_rng(0)
    for city in ("aachen", "bochum"):
        os.makedirs(root / "leftImg8bit" / "val" / city)
        os.makedirs(root / "gtFine" / "val" / city)
        name = f"{city}_000000_000019"
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(
            root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png")
        labels = rng.choice([0, 7, 8, 11, 21, 23, 26], size=(32, 64)).astype(np.uint8)  # never 'bus' (28)
        Image.fromarray(labels).save(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png")


def test_cityscapes_convention_and_nested_stems(tmp_path):
    root = tmp_path / "cityscapes"
    _cityscapes_tree(root)
    ds = build_dataset("cityscapes", str(root), "val")
    pred = tmp_path / "pred"
    for i in range(len(ds)):
        s = ds[i]
        labels = np.where(s["sem_seg"] == 255, 0, s["sem_seg"]).astype(np.uint8)
        labels[:4, :4] = 15  # 'bus': predicted, never in the ground truth
        rel = os.path.relpath(s["file_name"], root / "leftImg8bit" / "val")
        os.makedirs(pred / os.path.dirname(rel), exist_ok=True)
        Image.fromarray(labels).save(pred / (os.path.splitext(rel)[0] + "_labels.png"))
    args = ["evaluate", "--dataset", "cityscapes", "--data-root", str(root), "--predictions", str(pred), "--json"]
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    official = json.loads(res.stdout.strip().splitlines()[-1])
    assert official["convention"] == "cityscapes" and "cityscapesscripts" in res.stdout
    assert official["IoU-bus"] == 0.0 and official["IoU-train"] is None
    detectron2 = json.loads(cli(*args, "--convention", "detectron2").stdout.strip().splitlines()[-1])
    assert detectron2["IoU-bus"] is None and detectron2["mIoU"] > official["mIoU"]


def test_errors_are_one_line(model_dir, data_root, tmp_path):
    res = cli("evaluate", "--dataset", "folder", "--data-root", data_root, "--model", model_dir, "--task", "panoptic",
              "--tta")
    assert res.returncode == 1 and "semantic task only" in res.stderr and "Traceback" not in res.stderr
    res = cli("evaluate", "--dataset", "folder", "--data-root", data_root, "--predictions", str(tmp_path), "--tta")
    assert res.returncode == 1 and "not to --predictions" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("evaluate", "--dataset", "folder", "--data-root", data_root, "--predictions", str(empty))
    assert res.returncode == 1 and "scene_00000_labels.png" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_torchrun_two_processes_equal_one(model_dir, data_root, tmp_path, task):
    """Under torchrun each process segments every other image; rank 0 merges the evaluator
    states and reports alone. The numbers are those of one process (PQ's IoU sums may differ
    in the last bits, being added in another order)."""
    common = ["evaluate", "--dataset", "folder", "--data-root", data_root, "--model", model_dir, "--task", task,
              "--threshold", THRESHOLD, "--json"]
    one = evaluate(data_root, *common[5:])
    port = str(29500 + {"semantic": 21, "panoptic": 22, "instance": 23}[task])
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          port, "-m", "mask2former.cli", *common, "--out", str(tmp_path / "report")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    json_lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1  # only rank 0 reports
    two = json.loads(json_lines[0])
    assert two.keys() == one.keys() and two["num_images"] == one["num_images"] == 3
    for k, v in one.items():
        assert two[k] == (pytest.approx(v, abs=1e-9) if isinstance(v, float) else v), k
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()
