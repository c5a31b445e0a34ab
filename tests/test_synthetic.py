"""The synthetic scene generator: determinism, layout, class file, and that it is learnable."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from mask2former.data import AugmentedDataset, FolderDataset, build_targets, scale_choices, semantic_augmentation
from mask2former.data.synthetic import CLASSES, generate, main


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            path = os.path.join(dirpath, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    generate(root, num_train=4, num_val=2, size=(64, 96), seed=3)
    return str(root)


def test_same_seed_gives_identical_bytes(scenes, tmp_path):
    generate(tmp_path / "again", 4, 2, size=(64, 96), seed=3)
    assert _files(scenes) == _files(tmp_path / "again")
    generate(tmp_path / "other", 4, 2, size=(64, 96), seed=4)
    other = _files(tmp_path / "other")
    assert other["images/train/scene_00000.png"] != _files(scenes)["images/train/scene_00000.png"]


def test_more_images_extend_a_smaller_set(scenes, tmp_path):
    generate(tmp_path / "small", 2, 1, size=(64, 96), seed=3)
    small, full = _files(tmp_path / "small"), _files(scenes)
    for name, data in small.items():
        assert full[name] == data, name


def test_layout_and_class_file(scenes):
    for split, n in (("train", 4), ("val", 2)):
        for sub in ("images", "labels", "instances"):
            names = sorted(os.listdir(os.path.join(scenes, sub, split)))
            assert names == [f"scene_{i:05d}.png" for i in range(n)]
    meta = json.load(open(os.path.join(scenes, "classes.json")))
    assert [c["name"] for c in meta["classes"]] == [c[0] for c in CLASSES]
    assert [c["id"] for c in meta["classes"]] == list(range(len(CLASSES)))
    assert {c["name"] for c in meta["classes"] if c["isthing"]} == {"car", "person", "sign"}
    assert len({tuple(c["color"]) for c in meta["classes"]}) == len(CLASSES)
    assert meta["ignore_value"] == 255


def test_labels_and_instances_are_consistent(scenes):
    things = [i for i, c in enumerate(CLASSES) if c[2]]
    for i in range(4):
        image = np.asarray(Image.open(os.path.join(scenes, "images/train", f"scene_{i:05d}.png")))
        label = np.asarray(Image.open(os.path.join(scenes, "labels/train", f"scene_{i:05d}.png")))
        inst = np.asarray(Image.open(os.path.join(scenes, "instances/train", f"scene_{i:05d}.png")))
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8
        assert label.shape == inst.shape == (64, 96)
        assert set(np.unique(label).tolist()) <= set(range(len(CLASSES))) | {255}
        # Instance pixels are thing pixels, each instance has one class, and things are instances.
        assert np.isin(label[inst > 0], things).all()
        assert (inst[np.isin(label, things)] > 0).all()
        for k in np.unique(inst[inst > 0]):
            assert len(np.unique(label[inst == k])) == 1


def test_reads_as_panoptic_folder_dataset(scenes):
    ds = FolderDataset(scenes, "train")
    assert ds.task == "panoptic" and len(ds) == 4 and ds.num_classes == len(CLASSES)
    sample = ds[0]
    assert sample["sem_seg"].dtype == np.int64
    targets = build_targets(sample)
    assert targets["masks"].sum(0).max() <= 1  # panoptic segments never overlap
    assert any(s["isthing"] for s in sample["segments"])
    # Through the Cityscapes-style pipeline (scaled down): targets stay disjoint and in range.
    aug = AugmentedDataset(ds, semantic_augmentation(scale_choices(64), 256, (32, 48)), seed=1)
    for i in range(len(ds)):
        item = aug[i]
        assert item["image"].shape == (3, 32, 48) and item["masks"].shape[1:] == (32, 48)
        assert item["masks"].sum(0).max() <= 1 and ((item["labels"] >= 0) & (item["labels"] < 8)).all()


def test_nearest_mean_colour_separates_classes(tmp_path):
    # A crude stand-in for "a small model can learn it": even per-pixel colour alone, with
    # class means from training images, labels most validation pixels correctly.
    generate(tmp_path, 6, 2, size=(96, 96), seed=0)
    train, val = FolderDataset(tmp_path, "train"), FolderDataset(tmp_path, "val")
    sums, counts = np.zeros((len(CLASSES), 3)), np.zeros(len(CLASSES))
    for s in train:
        for c in range(len(CLASSES)):
            m = s["sem_seg"] == c
            sums[c] += s["image"][m].sum(0)
            counts[c] += m.sum()
    means = sums / np.maximum(counts, 1)[:, None]
    correct = total = 0
    for s in val:
        valid = s["sem_seg"] != 255
        px = s["image"][valid].astype(float)
        pred = np.argmin(((px[:, None, :] - means[None]) ** 2).sum(-1), 1)
        correct += (pred == s["sem_seg"][valid]).sum()
        total += valid.sum()
    assert correct / total > 0.8


def test_cli(tmp_path, capsys):
    main([str(tmp_path / "out"), "--train", "2", "--val", "1", "--size", "32", "48", "--seed", "1"])
    assert len(os.listdir(tmp_path / "out/images/train")) == 2
    assert np.asarray(Image.open(tmp_path / "out/labels/val/scene_00000.png")).shape == (32, 48)
    assert "wrote 2 train" in capsys.readouterr().out
