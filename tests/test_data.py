"""Dataset readers on tiny trees written here in each real on-disk format, the augmentations,
and the loss targets."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former.data import (
    ADE20KSemantic, AugmentedDataset, CityscapesPanoptic, CityscapesSemantic, CocoInstance, CocoPanoptic,
    ColorAugSSD, Compose, DatasetError, FixedSizeCrop, FolderDataset, PadToSize, RandomCrop, RandomFlip,
    ResizeScale, ResizeShortestEdge, build_dataset, build_targets, cityscapes_labels, collate,
    lsj_augmentation, scale_choices, semantic_augmentation,
)
from mask2former.data.transforms import flip, hflip, hsv_to_rgb, rgb_to_hsv

H, W = 24, 32


def _save(array, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _image(seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- plain folder -----------------------------------------------------------------------------

CLASSES = [{"name": "road", "color": [128, 64, 128]}, {"name": "sky", "color": [70, 130, 180]},
           {"name": "car", "color": [0, 0, 142], "isthing": True}]


def _folder(root, label=None, class_file="json"):
    sem = np.zeros((H, W), np.uint8) if label is None else label
    sem[:8] = 1
    sem[10:16, 4:12] = 2
    sem[10:16, 20:28] = 2
    sem[20:, :] = 255
    _save(_image(), os.path.join(root, "images/train/a.png"))
    Image.fromarray(_image(1)).save(os.path.join(root, "images/train/b.jpg"))
    _save(sem, os.path.join(root, "labels/train/a.png"))
    _save(sem, os.path.join(root, "labels/train/b.png"))
    if class_file == "json":
        json.dump({"classes": CLASSES}, open(os.path.join(root, "classes.json"), "w"))
    else:
        import yaml

        yaml.safe_dump(CLASSES, open(os.path.join(root, "classes.yaml"), "w"))
    return sem


@pytest.mark.parametrize("class_file", ["json", "yaml"])
def test_folder_semantic(tmp_path, class_file):
    sem = _folder(tmp_path, class_file=class_file)
    ds = FolderDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.task == "semantic" and ds.num_classes == 3
    assert [c.isthing for c in ds.classes] == [False, False, True]
    s = ds[0]
    assert s["file_name"].endswith("a.png") and ds[1]["file_name"].endswith("b.jpg")
    assert s["image"].dtype == np.uint8 and s["image"].shape == (H, W, 3)
    assert s["sem_seg"].dtype == np.int64 and np.array_equal(s["sem_seg"], sem)


def test_folder_panoptic_and_colour_labels(tmp_path):
    sem = _folder(tmp_path)
    inst = np.zeros((H, W), np.uint8)
    inst[10:16, 4:12] = 1  # the second car has no instance id: a crowd region
    _save(inst, os.path.join(tmp_path, "instances/train/a.png"))
    _save(inst, os.path.join(tmp_path, "instances/train/b.png"))
    palette = np.zeros((256, 3), np.uint8)
    for i, c in enumerate(CLASSES):
        palette[i] = c["color"]
    _save(palette[sem], os.path.join(tmp_path, "labels/train/b.png"))  # colour-coded, black = ignore
    ds = FolderDataset(tmp_path, "train")
    assert ds.task == "panoptic"
    a, b = ds[0], ds[1]
    assert np.array_equal(a["sem_seg"], b["sem_seg"])
    segs = {(s["category_id"], s["iscrowd"]) for s in a["segments"]}
    assert segs == {(0, 0), (1, 0), (2, 0), (2, 1)}
    for s in a["segments"]:
        assert (a["sem_seg"][a["pan_seg"] == s["id"]] == s["category_id"]).all()
    assert (a["pan_seg"][sem == 255] == 0).all()


def test_folder_errors(tmp_path):
    _folder(tmp_path)
    os.remove(os.path.join(tmp_path, "labels/train/b.png"))
    with pytest.raises(DatasetError, match=r"b\.jpg: no label file"):
        FolderDataset(tmp_path, "train")
    bad = np.zeros((H, W), np.uint8)
    bad[0, 0] = 7
    _save(bad, os.path.join(tmp_path, "labels/train/b.png"))
    with pytest.raises(DatasetError, match=r"b\.png: label values \[7\] are outside 0\.\.2"):
        FolderDataset(tmp_path, "train")[1]
    _save(np.zeros((H + 1, W), np.uint8), os.path.join(tmp_path, "labels/train/b.png"))
    with pytest.raises(DatasetError, match="does not match image"):
        FolderDataset(tmp_path, "train")[1]
    open(os.path.join(tmp_path, "images/train/a.png"), "wb").write(b"not a png")
    with pytest.raises(DatasetError, match=r"a\.png: cannot read image"):
        FolderDataset(tmp_path, "train")[0]
    os.remove(os.path.join(tmp_path, "classes.json"))
    with pytest.raises(DatasetError, match="no classes.json"):
        FolderDataset(tmp_path, "train")


# ---- Cityscapes -------------------------------------------------------------------------------

def _cityscapes(root, split="train", with_instances=True):
    label = np.full((H, W), 7, np.uint8)  # road
    label[:6] = 23  # sky
    label[6:8] = 29  # caravan: a thing not evaluated -> ignore
    label[-2:] = 1  # ego vehicle -> ignore
    ids = label.astype(np.uint16)
    ids[10:14, 2:8], label[10:14, 2:8] = 26000, 26  # car 0
    ids[10:14, 10:16], label[10:14, 10:16] = 26001, 26  # car 1
    ids[15:18, 2:6], label[15:18, 2:6] = 24000, 24  # person
    ids[15:18, 20:28], label[15:18, 20:28] = 26, 26  # car group (crowd)
    ids[6:8] = 29000
    stem = "aachen_000000_000019"
    _save(_image(), os.path.join(root, f"leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png"))
    _save(label, os.path.join(root, f"gtFine/{split}/aachen/{stem}_gtFine_labelIds.png"))
    if with_instances:
        _save(ids, os.path.join(root, f"gtFine/{split}/aachen/{stem}_gtFine_instanceIds.png"))
    return label, ids


def test_cityscapes_semantic(tmp_path):
    label, _ = _cityscapes(tmp_path)
    ds = CityscapesSemantic(tmp_path, "train")
    assert len(ds) == 1 and ds.num_classes == 19
    assert ds.classes[0].name == "road" and ds.classes[18].name == "bicycle"
    sem = ds[0]["sem_seg"]
    lut = {7: 0, 23: 10, 29: 255, 1: 255, 26: 13, 24: 11}
    for raw, train in lut.items():
        assert (sem[label == raw] == train).all()


def test_cityscapes_errors(tmp_path):
    label, _ = _cityscapes(tmp_path, with_instances=False)
    with pytest.raises(DatasetError, match=r"_leftImg8bit\.png: no ground truth file .*instanceIds"):
        CityscapesPanoptic(tmp_path, "train")
    label[0, 0] = 40  # not a Cityscapes label id
    _save(label, os.path.join(tmp_path, "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"))
    with pytest.raises(DatasetError, match=r"labelIds\.png: unknown Cityscapes label values \[40\]"):
        CityscapesSemantic(tmp_path, "train")[0]
    os.makedirs(tmp_path / "leftImg8bit/val")
    with pytest.raises(DatasetError, match="no images"):
        CityscapesSemantic(tmp_path, "val")


def test_cityscapes_panoptic_and_instance(tmp_path):
    _, ids = _cityscapes(tmp_path)
    s = CityscapesPanoptic(tmp_path, "train", task="panoptic")[0]
    segs = {x["id"]: x for x in s["segments"]}
    assert set(segs) == {7, 23, 26, 24000, 26000, 26001}  # caravan and ego vehicle are void
    assert segs[26000]["category_id"] == 13 and not segs[26000]["iscrowd"] and segs[26000]["isthing"]
    assert segs[26]["iscrowd"] == 1 and segs[7]["category_id"] == 0 and not segs[7]["isthing"]
    assert (s["pan_seg"][ids == 29000] == 0).all() and (s["sem_seg"][ids == 29000] == 255).all()
    t = build_targets(s)
    assert sorted(t["labels"].tolist()) == [0, 10, 11, 13, 13]  # crowd excluded

    inst = CityscapesPanoptic(tmp_path, "train", task="instance")
    assert [c.name for c in inst.classes] == ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    s = inst[0]
    assert sorted((x["category_id"], x["iscrowd"]) for x in s["segments"]) == [(0, 0), (2, 0), (2, 0), (2, 1)]
    assert (s["pan_seg"][ids == 7] == 0).all()  # stuff is not part of instance targets
    assert sorted(build_targets(s)["labels"].tolist()) == [0, 2, 2]


def test_cityscapes_builtin_table_matches_cityscapesscripts(monkeypatch):
    pytest.importorskip("cityscapesscripts")
    official = cityscapes_labels()
    import builtins

    real_import = builtins.__import__

    def no_cityscapesscripts(name, *a, **k):
        if name.startswith("cityscapesscripts"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cityscapesscripts)
    assert cityscapes_labels() == official


# ---- COCO -------------------------------------------------------------------------------------

COCO_CATS = [  # deliberately unsorted, with gaps, as the real ids are
    {"id": 184, "name": "tree-merged", "isthing": 0, "color": [1, 2, 3]},
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142]},
]


def _coco_panoptic(root, extra_id=False):
    pan = np.zeros((H, W), np.int64)
    pan[:10] = 5000  # tree
    pan[12:20, 2:10] = 257  # person (id needs two channels)
    pan[12:20, 14:22] = 65536 * 2 + 3  # car (all three channels)
    pan[12:20, 24:30] = 9  # crowd of people
    if extra_id:
        pan[0, 0] = 77
    rgb = np.stack([pan % 256, pan // 256 % 256, pan // 65536], -1).astype(np.uint8)
    _save(_image(), os.path.join(root, "val2017/000000000139.jpg"))
    _save(rgb, os.path.join(root, "panoptic_val2017/000000000139.png"))
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": H, "width": W}],
        "categories": COCO_CATS,
        "annotations": [{"image_id": 139, "file_name": "000000000139.png", "segments_info": [
            {"id": 5000, "category_id": 184, "iscrowd": 0}, {"id": 257, "category_id": 1, "iscrowd": 0},
            {"id": 131075, "category_id": 3, "iscrowd": 0}, {"id": 9, "category_id": 1, "iscrowd": 1}]}],
    }
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    json.dump(data, open(os.path.join(root, "annotations/panoptic_val2017.json"), "w"))
    return pan


def test_coco_panoptic(tmp_path):
    pan = _coco_panoptic(tmp_path)
    ds = CocoPanoptic(tmp_path, "val")
    assert [c.name for c in ds.classes] == ["person", "car", "tree-merged"]  # sorted by dataset id
    assert [c.isthing for c in ds.classes] == [True, True, False]
    s = ds[0]
    assert np.array_equal(s["pan_seg"], pan)
    assert s["sem_seg"][0, 0] == 2 and s["sem_seg"][15, 5] == 0 and s["sem_seg"][15, 15] == 1
    assert s["sem_seg"][11, 0] == 255  # void
    t = build_targets(s)
    assert t["labels"].tolist() == [2, 0, 1] and t["masks"].shape == (3, H, W)
    assert t["masks"][1].sum() == 64


def test_coco_panoptic_errors(tmp_path):
    _coco_panoptic(tmp_path, extra_id=True)
    with pytest.raises(DatasetError, match=r"000000000139\.png: segment ids \[77\] are not in panoptic_val2017\.json"):
        CocoPanoptic(tmp_path, "val")[0]
    os.remove(os.path.join(tmp_path, "val2017/000000000139.jpg"))
    with pytest.raises(DatasetError, match=r"000000000139\.jpg: image file is missing"):
        CocoPanoptic(tmp_path, "val")[0]
    with pytest.raises(DatasetError, match=r"panoptic_train2017\.json: annotation file is missing"):
        CocoPanoptic(tmp_path, "train")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2, harmless
def test_coco_instance(tmp_path):
    from pycocotools import mask as mask_util

    rle_mask = np.zeros((H, W), np.uint8, order="F")
    rle_mask[2:6, 3:9] = 1
    rle = mask_util.encode(rle_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}, {"id": 2, "file_name": "b.jpg", "height": H, "width": W}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]], "area": 100, "bbox": [10, 10, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": rle, "area": 24, "bbox": [3, 2, 6, 4]},
            {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 1, "segmentation": rle, "area": 24, "bbox": [3, 2, 6, 4]},
        ],
    }
    os.makedirs(tmp_path / "annotations")
    json.dump(data, open(tmp_path / "annotations/instances_train2017.json", "w"))
    _save(_image(), str(tmp_path / "train2017/a.jpg"))
    _save(_image(1), str(tmp_path / "train2017/b.jpg"))
    ds = CocoInstance(tmp_path, "train")
    assert len(ds) == 2 and [c.name for c in ds.classes] == ["car", "dog"]
    assert len(CocoInstance(tmp_path, "train", skip_empty=True)) == 1
    s = ds[0]
    assert s["masks"].shape == (3, H, W) and s["masks"].dtype == bool
    assert [x["category_id"] for x in s["segments"]] == [1, 0, 0]
    assert np.array_equal(s["masks"][1], rle_mask.astype(bool))
    assert 90 <= s["masks"][0].sum() <= 121  # the 10x10 polygon, rasterised
    t = build_targets(s)
    assert t["labels"].tolist() == [1, 0]  # the crowd annotation is dropped
    assert build_targets(ds[1])["masks"].shape == (0, H, W)


# ---- ADE20K -----------------------------------------------------------------------------------

def test_ade20k_reduce_zero_label(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    raw = np.zeros((H, W), np.uint8)
    raw[:, 8:] = 1
    raw[:, 16:] = 150
    _save(_image(), str(base / "images/validation/ADE_val_00000001.jpg"))
    _save(raw, str(base / "annotations/validation/ADE_val_00000001.png"))
    for root in (tmp_path, base):
        s = ADE20KSemantic(root, "val")[0]
        assert (s["sem_seg"][:, :8] == 255).all() and (s["sem_seg"][:, 8:16] == 0).all() and (s["sem_seg"][:, 16:] == 149).all()
    raw[0, 0] = 151
    _save(raw, str(base / "annotations/validation/ADE_val_00000001.png"))
    with pytest.raises(DatasetError, match=r"ADE_val_00000001\.png: label values \[151\]"):
        ADE20KSemantic(tmp_path, "val")[0]


def test_build_dataset(tmp_path):
    _cityscapes(tmp_path)
    assert isinstance(build_dataset("cityscapes", str(tmp_path)), CityscapesSemantic)
    assert build_dataset("cityscapes_instance", str(tmp_path)).task == "instance"
    with pytest.raises(ValueError, match="unknown dataset kind"):
        build_dataset("pascal", str(tmp_path))


# ---- transforms -------------------------------------------------------------------------------

PALETTE = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]], np.uint8)
IGNORE_COLOUR = (60, 60, 60)


def _sample(h=40, w=60):
    """A sample whose image colour encodes its class, so misalignment is visible."""
    sem = np.zeros((h, w), np.int64)
    sem[:, w // 3:] = 1
    sem[h // 4: h // 2, 5:20] = 2
    sem[h // 2:, w // 2: w - 5] = 3
    sem[-4:, :] = 255
    image = np.where((sem == 255)[..., None], np.array(IGNORE_COLOUR, np.uint8), PALETTE[np.where(sem == 255, 0, sem)])
    pan = np.where(sem == 255, 0, sem + 1)
    segments = [{"id": c + 1, "category_id": c, "iscrowd": 0, "isthing": c >= 2} for c in range(4)]
    masks = np.stack([sem == c for c in range(4)])
    return {"file_name": "x", "image": image, "sem_seg": sem, "pan_seg": pan, "segments": segments, "masks": masks}


def _assert_aligned(s):
    # Resizing blends colours only across class borders, so a pixel that still has a pure class
    # colour must carry that class; most pixels must be pure. A shift of one pixel would fail.
    sem, img = s["sem_seg"], s["image"].astype(int)
    pure_total = 0
    for colour, label in zip(list(PALETTE) + [IGNORE_COLOUR], [0, 1, 2, 3, 255]):
        pure = (np.abs(img - np.asarray(colour, int)) <= 2).all(-1)
        assert (sem[pure] == label).all()
        pure_total += pure.sum()
    assert pure_total >= 0.6 * (~s.get("padding_mask", np.zeros(sem.shape, bool))).sum()
    assert np.array_equal(s["pan_seg"], np.where(sem == 255, 0, sem + 1))  # padding: 255 and 0
    assert np.array_equal(s["masks"], np.stack([sem == c for c in range(4)]))


def test_flip_twice_is_identity_and_keeps_alignment():
    s = _sample()
    for twice in (hflip(hflip(s)), flip(flip(s, horizontal=False), horizontal=False)):
        for k in ("image", "sem_seg", "pan_seg", "masks"):
            assert np.array_equal(twice[k], s[k])
    _assert_aligned(hflip(s))


@pytest.mark.parametrize("seed", range(4))
def test_pipelines_keep_image_and_targets_aligned(seed):
    rng = np.random.default_rng(seed)
    aug = Compose([ResizeShortestEdge([30, 60, 90], 200), RandomCrop((32, 48)), RandomFlip(), PadToSize((40, 56))])
    out = aug(_sample(), rng)
    assert out["image"].shape == (40, 56, 3)
    pad = out["padding_mask"]
    assert (out["image"][pad] == 128).all() and (out["sem_seg"][pad] == 255).all() and (out["pan_seg"][pad] == 0).all()
    _assert_aligned(out)
    _assert_aligned(lsj_augmentation(64, 0.8, 2.0)(_sample(), rng))  # tiny scales are all border


def test_augmentation_is_reproducible_from_the_generator():
    aug = semantic_augmentation(scale_choices(40), 200, (32, 32), 0.8)
    a = aug(_sample(), np.random.default_rng(7))
    b = aug(_sample(), np.random.default_rng(7))
    c = aug(_sample(), np.random.default_rng(8))
    assert all(np.array_equal(a[k], b[k]) for k in ("image", "sem_seg", "masks"))
    assert not np.array_equal(a["image"], c["image"]) or not np.array_equal(a["sem_seg"], c["sem_seg"])


def test_resize_shortest_edge_sizes():
    assert scale_choices(1024) == [int(x * 0.1 * 1024) for x in range(5, 21)]
    r = ResizeShortestEdge(512, max_size=800)
    assert r.output_size(100, 200, 512) == (400, 800)  # capped by the long edge
    assert r.output_size(300, 200, 100) == (150, 100)
    out = ResizeShortestEdge([20], 1000)(_sample(40, 60), np.random.default_rng(0))
    assert out["image"].shape[:2] == out["sem_seg"].shape == (20, 30) and out["masks"].shape == (4, 20, 30)


def test_lsj_crops_and_pads_to_a_square():
    rng = np.random.default_rng(1)
    for _ in range(5):
        s = ResizeScale(0.1, 2.0, 64, 64)(_sample(), rng)
        assert max(s["image"].shape[0] / 64, s["image"].shape[1] / 64) <= 2.0 + 1e-6
        out = FixedSizeCrop((64, 64))(s, rng)
        assert out["image"].shape == (64, 64, 3) and out["masks"].shape == (4, 64, 64)
        pad = out["padding_mask"]
        assert (out["sem_seg"][pad] == 255).all() and not out["masks"][:, pad].any()


def test_category_area_crop():
    # Class 0 fills the left 70 columns, class 1 the rest; ignore covers the top rows.
    sem = np.zeros((40, 100), np.int64)
    sem[:, 70:] = 1
    sem[:10] = 255
    s = {"image": np.zeros((40, 100, 3), np.uint8), "sem_seg": sem}

    def ok(out):
        labels, counts = np.unique(out["sem_seg"], return_counts=True)
        counts = counts[labels != 255]
        return len(counts) > 1 and counts.max() < 0.75 * counts.sum()

    constrained = [ok(RandomCrop((40, 50), single_category_max_area=0.75)(s, np.random.default_rng(i))) for i in range(30)]
    plain = [ok(RandomCrop((40, 50))(s, np.random.default_rng(i))) for i in range(30)]
    assert all(constrained) and sum(plain) < 25
    # Ignore is not a category: a window mostly of 255 plus one class is still "one category".
    only = {"image": s["image"], "sem_seg": np.where(np.arange(100) < 90, 255, 0)[None].repeat(40, 0)}
    out = RandomCrop((40, 50), single_category_max_area=0.75)(only, np.random.default_rng(0))
    assert out["sem_seg"].shape == (40, 50)  # gives up after 10 tries and keeps the last window


def test_color_aug_changes_only_the_image():
    s = _sample()
    changed = 0
    for i in range(8):
        out = ColorAugSSD()(s, np.random.default_rng(i))
        assert out["sem_seg"] is s["sem_seg"] and out["image"].dtype == np.uint8 and out["image"].shape == s["image"].shape
        changed += not np.array_equal(out["image"], s["image"])
    assert changed >= 5
    pixels = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    assert np.abs(hsv_to_rgb(rgb_to_hsv(pixels)).astype(int) - pixels).max() <= 1
    import colorsys

    hsv = rgb_to_hsv(pixels[:4, :4]).reshape(-1, 3)
    ref = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in pixels[:4, :4].reshape(-1, 3)])
    assert np.allclose(hsv[:, 0], ref[:, 0] * 360, atol=1e-3) and np.allclose(hsv[:, 1:], ref[:, 1:], atol=1e-5)


def test_semantic_targets_partition_non_ignored_pixels():
    s = _sample()
    t = build_targets(s, task="semantic")
    assert t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.bool
    assert t["labels"].tolist() == [0, 1, 2, 3]
    cover = t["masks"].sum(0)
    valid = torch.from_numpy(s["sem_seg"] != 255)
    assert (cover[valid] == 1).all() and (cover[~valid] == 0).all()
    empty = dict(s, sem_seg=np.full_like(s["sem_seg"], 255))
    assert build_targets(empty, task="semantic")["masks"].shape == (0, 40, 60)


def test_panoptic_targets_drop_crowd_and_cropped_away_segments():
    s = _sample()
    s["segments"][3]["iscrowd"] = 1
    del s["masks"]
    t = build_targets(s)
    assert t["labels"].tolist() == [0, 1, 2]
    cropped = dict(s, image=s["image"][:, :15], pan_seg=s["pan_seg"][:, :15])
    assert build_targets(cropped, task="panoptic")["labels"].tolist() == [0, 2]


def test_augmented_dataset_is_seeded_per_item_and_epoch(tmp_path):
    _folder(tmp_path)
    ds = AugmentedDataset(FolderDataset(tmp_path, "train"), semantic_augmentation([20, 30], 100, (16, 16)), seed=5)
    a, b = ds[0], ds[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
    assert a["image"].shape == (3, 16, 16) and a["image"].dtype == torch.uint8
    assert a["masks"].shape[1:] == (16, 16) and a["sem_seg"].shape == (16, 16) and a["orig_size"] == (H, W)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], a["image"])
    plain = AugmentedDataset(FolderDataset(tmp_path, "train"))  # no augmentation: full size
    batch = collate([a, plain[1]])
    assert batch["images"].shape == (2, 3, H, W) and batch["sem_seg"].shape == (2, H, W)
    assert batch["pixel_mask"][0].sum() == 16 * 16 and batch["pixel_mask"][1].all()
    assert (batch["sem_seg"][0][~batch["pixel_mask"][0]] == 255).all()
    assert [m.shape[1:] for m in batch["masks"]] == [(H, W), (H, W)]
    assert torch.equal(batch["masks"][0][:, :16, :16], a["masks"])
