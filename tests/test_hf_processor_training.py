"""The processor's training path (segmentation maps -> mask_labels / class_labels) against
transformers' Mask2FormerImageProcessor on the same inputs, and the transformers fine-tuning
loop run with our classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor
from mask2former.processor import binary_mask_to_rle

transformers = pytest.importorskip("transformers")

SETTINGS = dict(size={"shortest_edge": 32, "longest_edge": 1333}, size_divisor=0, ignore_index=255)
INSTANCES = {0: 7, 1: 8, 2: 9, 3: 1, 4: 2, 255: 3}


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 255, (60, 45, 3), dtype=np.uint8))]
    maps = [rng.integers(0, 5, (40, 50)).astype(np.uint8), rng.integers(0, 5, (60, 45)).astype(np.uint8)]
    maps[0][:3] = 255  # ignored pixels
    return images, maps


def _as(kind: str, maps):
    return {"np": maps, "pil": [Image.fromarray(m) for m in maps], "pt": [torch.from_numpy(m) for m in maps]}[kind]


@pytest.mark.parametrize("kind", ["np", "pil", "pt"])
@pytest.mark.parametrize("options", [{}, {"instance_id_to_semantic_id": INSTANCES}, {"do_reduce_labels": True},
                                     {"instance_id_to_semantic_id": [INSTANCES, INSTANCES], "do_reduce_labels": True},
                                     {"size_divisor": 32}])
def test_targets_equal_transformers(kind, options):
    images, maps = _inputs()
    ref = transformers.Mask2FormerImageProcessor(**SETTINGS)(
        images, segmentation_maps=_as(kind, maps), return_tensors="pt", **options)
    ours = Mask2FormerImageProcessor(**SETTINGS)(images, segmentation_maps=_as(kind, maps), return_tensors="pt",
                                                 **options)
    assert set(ours) == set(ref) == {"pixel_values", "pixel_mask", "mask_labels", "class_labels"}
    assert torch.equal(ours["pixel_values"], ref["pixel_values"]) and torch.equal(ours["pixel_mask"], ref["pixel_mask"])
    for key in ("mask_labels", "class_labels"):
        assert len(ours[key]) == len(ref[key])
        for a, b in zip(ours[key], ref[key]):
            assert a.dtype == b.dtype and torch.equal(a, b), key


def test_wide_instance_ids_and_numpy_output():
    """Instance ids beyond 255 (int32 maps), which transformers' PIL backend refuses."""
    images, maps = _inputs(1)
    wide = [m.astype(np.int32) * 1000 for m in maps]
    mapping = {v * 1000: v % 3 for v in [*range(5), 255]}
    out = Mask2FormerImageProcessor(**{**SETTINGS, "ignore_index": None})(
        images, segmentation_maps=wide, instance_id_to_semantic_id=mapping, return_tensors="np")
    masks, labels = out["mask_labels"][0], out["class_labels"][0]
    assert isinstance(masks, np.ndarray) and masks.shape[1:] == out["pixel_values"].shape[2:]
    h, w = out.resized_sizes[0]
    resized = np.array(Image.fromarray(wide[0]).resize((w, h), Image.Resampling.NEAREST))
    ids = np.unique(resized)
    assert labels.tolist() == [mapping[int(i)] for i in ids]
    assert np.array_equal(masks[:, :h, :w], (resized[None] == ids[:, None, None]).astype(np.float32))
    assert not masks[:, h:].any() and not masks[:, :, w:].any()  # padding: 0 without an ignore index


def test_bad_targets_are_one_clear_error():
    images, maps = _inputs()
    proc = Mask2FormerImageProcessor(**{**SETTINGS, "ignore_index": None})
    with pytest.raises(ValueError, match="ignore_index"):
        proc(images, segmentation_maps=maps, do_reduce_labels=True)
    with pytest.raises(ValueError, match="2 images"):
        proc(images, segmentation_maps=maps[:1])
    with pytest.raises(ValueError, match="no class for instance ids"):
        proc(images, segmentation_maps=maps, instance_id_to_semantic_id={0: 1})
    with pytest.raises(ValueError, match="segmentation map 1"):
        proc(images, segmentation_maps=[maps[0], np.zeros((2, 3, 4))])


def test_input_data_format_and_encode_inputs():
    rng = np.random.default_rng(2)
    chw = rng.integers(0, 255, (3, 3, 40), dtype=np.uint8)  # 3 rows: ambiguous without the format
    proc = Mask2FormerImageProcessor(**SETTINGS)
    first = proc([chw], input_data_format="channels_first", do_resize=False)
    last = proc([np.moveaxis(chw, 0, -1)], input_data_format="channels_last", do_resize=False)
    assert first["pixel_values"].shape == (1, 3, 3, 40) and torch.equal(first["pixel_values"], last["pixel_values"])
    images, maps = _inputs()
    raw = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]
    encoded = proc.encode_inputs(raw, segmentation_maps=maps)
    plain = Mask2FormerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False, ignore_index=255)(
        raw, segmentation_maps=maps)
    assert torch.equal(encoded["pixel_values"], plain["pixel_values"])
    assert all(torch.equal(a, b) for a, b in zip(encoded["mask_labels"], plain["mask_labels"]))


def test_json_file_round_trip(tmp_path):
    proc = Mask2FormerImageProcessor(**SETTINGS, do_reduce_labels=True)
    proc.to_json_file(tmp_path / "p.json")
    assert Mask2FormerImageProcessor.from_json_file(tmp_path / "p.json") == proc
    assert transformers.Mask2FormerImageProcessor.from_json_file(tmp_path / "p.json").do_reduce_labels


def test_binary_mask_to_rle_equals_transformers():
    from transformers.models.mask2former.image_processing_pil_mask2former import binary_mask_to_rle as reference

    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = (rng.random((rng.integers(1, 9), rng.integers(1, 9))) > rng.random()).astype(np.uint8)
        assert binary_mask_to_rle(mask) == [int(v) for v in reference(mask)]
        assert binary_mask_to_rle(torch.from_numpy(mask)) == binary_mask_to_rle(mask)


def test_fine_tuning_loop_with_our_classes():
    """The transformers tutorial's loop, classes imported from mask2former."""
    config = Mask2FormerConfig(num_labels=5, hidden_size=32, num_queries=6, decoder_layers=3, encoder_layers=1,
                               feature_size=32, mask_feature_size=32, dim_feedforward=32, encoder_feedforward_dim=32,
                               num_attention_heads=2, train_num_points=256,
                               backbone_config={"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1],
                                                "num_heads": [1, 1, 2, 2]})
    model = Mask2FormerForUniversalSegmentation(config)
    processor = Mask2FormerImageProcessor(**SETTINGS, do_reduce_labels=True)
    images, maps = _inputs()
    maps = [np.where(m == 255, 0, m) for m in maps]  # 0 = unlabelled, reduced to the ignore index
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for _ in range(2):
        batch = processor(images, segmentation_maps=maps, return_tensors="pt").to("cpu", torch.float32)
        outputs = model(**batch)
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(outputs.loss)
    moved = batch.to(torch.float64)  # lists of per-image targets move too; class ids stay integers
    assert moved["mask_labels"][0].dtype == torch.float64 and moved["class_labels"][0].dtype == torch.int64
    with pytest.raises(ValueError, match="class_labels"):  # an id the classifier does not have: one clear line
        model(**processor(images, segmentation_maps=[m + 10 for m in maps]))
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged
