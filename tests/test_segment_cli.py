"""``mask2former segment`` end to end on real photographs, every task, every output file,
bad inputs among good ones, and independence from batch composition."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mask2former import Mask2FormerForUniversalSegmentation
from mask2former.processor import Mask2FormerImageProcessor
from mask2former.train.model_init import architecture_config

NAMES = ["road", "sky", "tree", "car", "person", "sign", "dog"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    cfg = architecture_config("tiny", dict(enumerate(NAMES)), {"num_queries": 10, "decoder_layers": 3})
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():  # sharper class scores than the random init gives
        model.transformer_decoder.class_embed.weight.mul_(30)
    model.save_pretrained(folder)
    Mask2FormerImageProcessor(size={"shortest_edge": 160, "longest_edge": 320}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.jpg", quality=90)
    os.makedirs(folder / "sub")
    Image.fromarray(skimage.data.chelsea()).save(folder / "sub" / "cat.png")
    Image.fromarray(skimage.data.camera()).save(folder / "sub" / "camera.png")  # grayscale
    return folder


def segment(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mask2former.cli", "segment", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_every_output_is_valid(model_dir, photos, tmp_path, task):
    out = tmp_path / "out"
    extra = {"semantic": [], "panoptic": ["--threshold", "0.1"], "instance": ["--show-threshold", "0.1"]}[task]
    res = segment(str(photos), "--model", model_dir, "--task", task, "--out", str(out), "--resize", "config", *extra)
    assert res.returncode == 0, res.stderr
    stems = ["astronaut", "coffee", "sub/cat", "sub/camera"]
    for stem in stems:
        image = read_png(photos / (stem + (".jpg" if stem == "coffee" else ".png")))
        labels = read_png(out / f"{stem}_labels.png")
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= set(range(len(NAMES))) | {255}
        overlay = read_png(out / f"{stem}_overlay.png")
        assert overlay.shape == image.shape[:2] + (3,)
        rows = json.loads((out / f"{stem}_areas.json").read_text())
        assert sum(r["percent"] for r in rows) == pytest.approx(100.0)
        assert sum(r["pixels"] for r in rows) == labels.size
        for r in rows:
            value = 255 if r["class_id"] < 0 else r["class_id"]
            assert r["pixels"] == int((labels == value).sum())
        csv_lines = (out / f"{stem}_areas.csv").read_text().splitlines()
        assert csv_lines[0] == "class_id,class_name,pixels,percent" and len(csv_lines) == len(rows) + 1
        if task == "panoptic":
            from mask2former.evaluation import rgb2id

            ids = rgb2id(read_png(out / f"{stem}_panoptic.png"))
            entry = next(a for a in json.loads((out / "panoptic.json").read_text())["annotations"]
                         if a["image_id"] == stem)
            for s in entry["segments_info"]:
                assert s["area"] == int((ids == s["id"]).sum()) > 0
                assert (labels[ids == s["id"]] == s["category_id"]).all()
            assert set(np.unique(ids)) <= {0} | {s["id"] for s in entry["segments_info"]}
            assert ((ids == 0) == (labels == 255)).all()
        if task == "instance":
            from pycocotools import mask as mask_utils

            instances = json.loads((out / f"{stem}_instances.json").read_text())
            painted = np.full(labels.shape, 255, dtype=np.uint8)
            for inst in reversed(instances):  # best first in the file; best wins overlaps
                m = mask_utils.decode(inst["segmentation"]).astype(bool)
                assert m.sum() == inst["area"] > 0
                if inst["score"] >= 0.1:  # --show-threshold: only these are painted
                    painted[m] = inst["category_id"]
            assert (painted == labels).all()
    totals = json.loads((out / "areas.json").read_text())
    assert sum(r["percent"] for r in totals) == pytest.approx(100.0)


def test_batch_size_does_not_change_results(model_dir, photos, tmp_path):
    a, b = tmp_path / "bs1", tmp_path / "bs4"
    for folder, bs in ((a, "1"), (b, "4")):
        res = segment(str(photos), str(photos / "astronaut.png"), "--model", model_dir, "--out", str(folder),
                      "--resize", "config", "--batch-size", bs, "--task", "panoptic", "--threshold", "0.1")
        assert res.returncode == 0, res.stderr
    def outputs(folder):  # the resume journal (.mask2former/) is bookkeeping, not output
        return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and ".mask2former" not in p.parts)

    files = outputs(a)
    assert files == outputs(b)
    assert len(files) > 10
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_bad_inputs_do_not_stop_the_batch(model_dir, photos, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.png").write_bytes(b"")
    (bad / "text.png").write_text("this is not an image")
    good = (photos / "astronaut.png").read_bytes()
    (bad / "truncated.png").write_bytes(good[: len(good) // 3])
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(bad / "tiny.png")
    Image.new("L", (20000, 20000)).save(bad / "bomb.png")  # 400 Mpx: PIL's decompression-bomb guard
    unreadable = bad / "locked.png"
    unreadable.write_bytes(good)
    os.chmod(unreadable, 0)
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(bad / "sixteen.png")
    rgba = np.zeros((80, 90, 4), np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(bad / "rgba.png")
    out = tmp_path / "out"
    res = segment(str(photos / "astronaut.png"), str(bad), str(photos / "coffee.jpg"), str(tmp_path / "missing.png"),
                  "--model", model_dir, "--out", str(out), "--resize", "config")
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    expected_bad = ["zero.png", "text.png", "truncated.png", "bomb.png", "missing.png"]
    if os.geteuid() != 0:  # root reads any file
        expected_bad.append("locked.png")
    for name in expected_bad:
        assert sum(name in e for e in errors) == 1, (name, errors)
    assert len(errors) == len(expected_bad)
    for stem in ("astronaut", "coffee", "tiny", "sixteen", "rgba"):
        assert read_png(out / f"{stem}_labels.png").ndim == 2
    assert not list(out.rglob(".tmp-*"))


def test_unwritable_output_folder(model_dir, photos, tmp_path):
    target = tmp_path / "file-not-folder"
    target.write_text("x")
    res = segment(str(photos / "astronaut.png"), "--model", model_dir, "--out", str(target / "sub"))
    assert res.returncode != 0
    assert "file-not-folder" in res.stderr and "Traceback" not in res.stderr
