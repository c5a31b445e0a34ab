"""Post-processing against a deliberately plain re-implementation of the original Mask2Former
inference (full upsampling, one loop per query, no chunking), on random outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mask2former.postprocess import (
    MaskResizer,
    instance_inference,
    panoptic_inference,
    semantic_inference,
    semantic_segmentation,
)
from mask2former.processor import Mask2FormerImageProcessor

# -- the reference: the original algorithm, written as plainly as possible ---------------


def ref_resize(low, padded, valid, out):
    """Upsample (Q, h, w) to the padded input, crop the valid region, resize to out."""
    up = F.interpolate(low[None], size=padded, mode="bilinear", align_corners=False)[0]
    return ref_sem_seg_postprocess(up, valid, out)


def ref_sem_seg_postprocess(maps, valid, out):
    cropped = maps[:, : valid[0], : valid[1]].expand(1, -1, -1, -1)
    return F.interpolate(cropped, size=out, mode="bilinear", align_corners=False)[0]


def ref_semantic(cls, masks):
    probs = F.softmax(cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, masks.sigmoid())


def ref_panoptic(cls, masks, object_thr=0.8, overlap_thr=0.8, stuff=()):
    num_classes = cls.shape[-1] - 1
    scores, labels = F.softmax(cls, dim=-1).max(-1)
    probs = masks.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_thr)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], probs[keep]
    seg = torch.zeros(masks.shape[-2:], dtype=torch.int32)
    info = []
    if cur_masks.shape[0] == 0:
        return seg, info
    ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff_seen = {}
    current = 0
    for k in range(cur_classes.shape[0]):
        c = cur_classes[k].item()
        isthing = c not in stuff
        area = (ids == k).sum().item()
        own = (cur_masks[k] >= 0.5).sum().item()
        mask = (ids == k) & (cur_masks[k] >= 0.5)
        if area > 0 and own > 0 and mask.sum().item() > 0:
            if area / own < overlap_thr:
                continue
            if not isthing:
                if c in stuff_seen:
                    seg[mask] = stuff_seen[c]
                    continue
                stuff_seen[c] = current + 1
            current += 1
            seg[mask] = current
            info.append({"id": current, "isthing": isthing, "category_id": c})
    return seg, info


def ref_instance(cls, masks, topk=100, things=None):
    num_queries, num_classes = cls.shape[0], cls.shape[1] - 1
    scores = F.softmax(cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes).unsqueeze(0).repeat(num_queries, 1).flatten(0, 1)
    top_scores, top_idx = scores.flatten(0, 1).topk(min(topk, scores.numel()), sorted=False)
    top_labels = labels[top_idx]
    mask_pred = masks[top_idx // num_classes]
    if things is not None:
        keep = torch.tensor([int(lab) in things for lab in top_labels], dtype=torch.bool)
        top_scores, top_labels, mask_pred, top_idx = top_scores[keep], top_labels[keep], mask_pred[keep], top_idx[keep]
    binary = (mask_pred > 0).float()
    mask_scores = (mask_pred.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return top_scores * mask_scores, top_labels, top_idx // num_classes, binary.bool()


# -- helpers ------------------------------------------------------------------------------


def random_outputs(batch, queries, classes, low, seed, peaked=True):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(batch, queries, classes + 1, generator=g) * 3
    if peaked:  # confident queries, so panoptic keeps some
        winners = torch.randint(0, classes + 1, (batch, queries), generator=g)
        cls.scatter_add_(2, winners[..., None], torch.full((batch, queries, 1), 8.0))
    masks = torch.randn(batch, queries, *low, generator=g) * 4
    return cls, masks


def outputs_of(cls, masks, pixel_mask=None):
    return SimpleNamespace(class_queries_logits=cls, masks_queries_logits=masks, pixel_mask=pixel_mask)


def padded_batch(valid_sizes, padded, seed, queries=12, classes=7):
    cls, masks = random_outputs(len(valid_sizes), queries, classes, (padded[0] // 4, padded[1] // 4), seed)
    pixel_mask = torch.zeros(len(valid_sizes), *padded, dtype=torch.int64)
    for i, (h, w) in enumerate(valid_sizes):
        pixel_mask[i, :h, :w] = 1
    return cls, masks, pixel_mask


def same_instances(ours, ref, exact=True):
    r_scores, r_labels, r_queries, r_masks = ref
    r_order = sorted(range(len(r_labels)), key=lambda i: (int(r_queries[i]), int(r_labels[i])))
    o_order = sorted(range(len(ours.labels)), key=lambda i: (int(ours.query_indices[i]), int(ours.labels[i])))
    assert [(int(ours.query_indices[i]), int(ours.labels[i])) for i in o_order] == [
        (int(r_queries[i]), int(r_labels[i])) for i in r_order
    ]
    o_scores, r_scores = ours.scores[o_order], r_scores[r_order]
    assert torch.equal(o_scores, r_scores) if exact else torch.allclose(o_scores, r_scores, rtol=1e-5, atol=1e-7)
    assert torch.equal(ours.masks[o_order], r_masks[r_order])
    assert torch.equal(ours.areas[o_order], r_masks[r_order].flatten(1).sum(1))
    assert list(ours.scores) == sorted(ours.scores.tolist(), reverse=True)


def same_panoptic(ours, ref):
    seg, info = ours
    r_seg, r_info = ref
    assert seg.dtype == torch.int32 and torch.equal(seg, r_seg)
    assert [{k: s[k] for k in ("id", "isthing", "category_id")} for s in info] == r_info
    for s in info:
        assert s["area"] == int((seg == s["id"]).sum()) and s["label_id"] == s["category_id"]


# -- per-image functions on masks already at output size ----------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_image_matches_reference(seed):
    cls, masks = random_outputs(1, 20, 9, (37, 45), seed)
    cls, masks = cls[0], masks[0]
    assert torch.equal(semantic_inference(cls, masks), ref_semantic(cls, masks))
    assert torch.equal(semantic_segmentation(cls, masks), ref_semantic(cls, masks).argmax(0))
    same_panoptic(panoptic_inference(cls, masks), ref_panoptic(cls, masks))
    same_panoptic(panoptic_inference(cls, masks, stuff_ids={0, 3, 5}), ref_panoptic(cls, masks, stuff=(0, 3, 5)))
    same_instances(instance_inference(cls, masks, top_k=100), ref_instance(cls, masks, 100))
    same_instances(instance_inference(cls, masks, top_k=30, thing_ids={1, 2, 4}),
                   ref_instance(cls, masks, 30, things={1, 2, 4}))


def test_panoptic_merges_stuff_and_drops_overlapped_queries():
    # Queries 0 and 1: the same stuff class (2) in two halves of rows 5-7 -> one segment.
    # Query 2: a thing over rows 0-4, but query 3 (more confident) wins rows 0-3, leaving it
    # 8 of its 40 pixels -> dropped by the overlap rule. Row 4 then belongs to nobody.
    cls = torch.zeros(4, 4)
    cls[0, 2] = cls[1, 2] = 3.0
    cls[2, 0] = 4.0
    cls[3, 1] = 5.0
    masks = torch.full((4, 8, 8), -10.0)
    masks[0, 5:, :4] = 10.0
    masks[1, 5:, 4:] = 10.0
    masks[2, :5, :] = 10.0
    masks[3, :4, :] = 10.0
    seg, info = panoptic_inference(cls, masks, stuff_ids={2})
    same_panoptic((seg, info), ref_panoptic(cls, masks, stuff=(2,)))
    assert [(s["category_id"], s["isthing"]) for s in info] == [(2, False), (1, True)]
    assert info[0]["area"] == 24 and info[0]["was_fused"] and not seg[4].any()
    seg2, info2 = panoptic_inference(cls, masks)  # no stuff: queries 0 and 1 stay apart
    assert [s["category_id"] for s in info2] == [2, 2, 1]


def test_nothing_kept_gives_empty_results():
    cls = torch.zeros(5, 4)
    cls[:, -1] = 10.0  # every query says "no object"
    masks = torch.randn(5, 6, 7)
    seg, info = panoptic_inference(cls, masks)
    assert seg.shape == (6, 7) and seg.dtype == torch.int32 and not seg.any() and info == []
    pred = instance_inference(cls, masks, score_threshold=0.5)
    assert pred.scores.numel() == 0 and pred.masks.shape == (0, 6, 7)


# -- the processor methods on padded batches ----------------------------------------------


@pytest.mark.parametrize("targets", [None, [(50, 61), (23, 80), (64, 64)]])
def test_padded_batch_matches_reference(targets):
    valid = [(64, 80), (41, 57), (30, 80)]
    cls, masks, pixel_mask = padded_batch(valid, (64, 80), seed=3)
    proc = Mask2FormerImageProcessor()
    outputs = outputs_of(cls, masks, pixel_mask)
    sem = proc.post_process_semantic_segmentation(outputs, target_sizes=targets)
    sem_after = proc.post_process_semantic_segmentation(outputs, target_sizes=targets, resize_before_inference=False)
    pan = proc.post_process_panoptic_segmentation(outputs, target_sizes=targets, label_ids_to_fuse={1, 4})
    ins = proc.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=targets, return_binary_maps=True)
    ins_nonempty = proc.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=targets,
                                                           return_binary_maps=True, drop_empty=True)
    for i, size in enumerate(valid):
        out = size if targets is None else targets[i]
        full = ref_resize(masks[i], (64, 80), size, out)
        assert sem[i].dtype == torch.int64 and sem[i].shape == out
        assert torch.equal(sem[i], ref_semantic(cls[i], full).argmax(0))
        up = F.interpolate(masks[i][None], size=(64, 80), mode="bilinear", align_corners=False)[0]
        assert torch.equal(sem_after[i], ref_sem_seg_postprocess(ref_semantic(cls[i], up), size, out).argmax(0))
        same_panoptic((pan[i]["segmentation"], pan[i]["segments_info"]), ref_panoptic(cls[i], full, stuff=(1, 4)))
        # threshold 0: the original's whole top-k list, empty masks included; sorted by score.
        r_scores, r_labels, r_queries, r_masks = ref_instance(cls[i], full)
        assert len(ins[i]["segments_info"]) == min(100, cls.shape[1] * (cls.shape[2] - 1))
        for got, keep in [(ins[i], torch.ones_like(r_scores, dtype=torch.bool)),
                          (ins_nonempty[i], r_masks.flatten(1).any(1))]:
            order = torch.sort(r_scores[keep], descending=True, stable=True).indices
            info = got["segments_info"]
            assert [s["label_id"] for s in info] == r_labels[keep][order].tolist()
            assert torch.equal(torch.tensor([s["score"] for s in info]), r_scores[keep][order])
            assert torch.equal(got["segmentation"], r_masks[keep][order])


def test_padding_does_not_leak():
    # Image 1 is valid on rows < 40, cols < 56 of a 64x96 input. Low-res cells from row 11 /
    # column 15 on are outside the bilinear support of every valid pixel, so whatever they
    # hold must not change the result; cropping before resizing is what guarantees it.
    cls, masks, pixel_mask = padded_batch([(64, 96), (40, 56)], (64, 96), seed=5, queries=6, classes=4)
    cls[1] = -10.0
    cls[1, 0, 0] = cls[1, 1, 1] = 10.0  # query 0 says class 0, query 1 says class 1
    masks[1, 0] = -20.0
    masks[1, 1] = 5.0
    outside = torch.zeros(16, 24, dtype=torch.bool)
    outside[11:, :] = True
    outside[:, 15:] = True
    loud = masks.clone()
    loud[1, 0][outside] = 1e4  # class 0 everywhere in the padding
    loud[1, 1][outside] = -1e4
    proc = Mask2FormerImageProcessor()
    targets = [(64, 96), (100, 140)]
    for m in (masks, loud):
        sem = proc.post_process_semantic_segmentation(outputs_of(cls, m, pixel_mask), target_sizes=targets)
        assert sem[1].shape == (100, 140) and (sem[1] == 1).all()
        pan = proc.post_process_panoptic_segmentation(outputs_of(cls, m, pixel_mask), target_sizes=targets)
        assert [s["category_id"] for s in pan[1]["segments_info"]] == [1]
        assert (pan[1]["segmentation"] == 1).all()
        ins = proc.post_process_instance_segmentation(outputs_of(cls, m, pixel_mask), target_sizes=targets)
        assert [s["label_id"] for s in ins[1]["segments_info"]] == [1] and (ins[1]["segmentation"] == 0).all()
    # Without the crop, the padding would have leaked in: the test can see the difference.
    naive = F.interpolate(loud[1][None], size=(100, 140), mode="bilinear", align_corners=False)[0]
    assert (ref_semantic(cls[1], naive).argmax(0) == 0).any()


def test_no_pixel_mask_means_all_valid_and_explicit_mask_wins():
    cls, masks, pixel_mask = padded_batch([(48, 64), (33, 40)], (48, 64), seed=7)
    proc = Mask2FormerImageProcessor()
    plain = proc.post_process_semantic_segmentation(outputs_of(cls, masks))
    assert plain[1].shape == (48, 64)
    given = proc.post_process_semantic_segmentation(outputs_of(cls, masks), pixel_mask=pixel_mask)
    assert given[1].shape == (33, 40)
    expected = ref_semantic(cls[1], ref_resize(masks[1], (48, 64), (33, 40), (33, 40))).argmax(0)
    assert torch.equal(given[1], expected)
    sizes = torch.tensor([[10, 20], [30, 40]])  # a tensor of target sizes works too
    assert [tuple(s.shape) for s in proc.post_process_semantic_segmentation(outputs_of(cls, masks), sizes)] == [
        (10, 20), (30, 40)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_instance_formats():
    pytest.importorskip("transformers")
    from transformers.models.maskformer.image_processing_pil_maskformer import convert_segmentation_to_rle

    cls, masks, pixel_mask = padded_batch([(40, 48), (36, 40)], (40, 48), seed=11)
    proc = Mask2FormerImageProcessor()
    outputs = outputs_of(cls, masks, pixel_mask)
    binary = proc.post_process_instance_segmentation(outputs, threshold=0.1, return_binary_maps=True)
    rle = proc.post_process_instance_segmentation(outputs, threshold=0.1, return_coco_annotation=True)
    labels = proc.post_process_instance_segmentation(outputs, threshold=0.1)
    for b, r, lab in zip(binary, rle, labels):
        assert b["segments_info"] == r["segments_info"] == lab["segments_info"]
        assert len(b["segments_info"]) > 1
        # return_coco_annotation: transformers' own run-length lists of the label map
        expected = convert_segmentation_to_rle(lab["segmentation"])
        assert [[int(v) for v in x] for x in r["segmentation"]] == [[int(v) for v in x] for x in expected]
        # label map: each pixel shows its best-scoring instance (ids are in score order)
        stack = b["segmentation"]
        first = torch.where(stack.any(0), stack.float().argmax(0).int(), torch.tensor(-1, dtype=torch.int32))
        assert torch.equal(lab["segmentation"], first)
        assert all(s["area"] == int(m.sum()) for s, m in zip(b["segments_info"], stack))
    with pytest.raises(ValueError):
        proc.post_process_instance_segmentation(outputs, return_binary_maps=True, return_coco_annotation=True)


# -- chunked computation (memory-bounded mode) ---------------------------------------------


def test_chunked_matches_reference_up_to_float_ties():
    """With a tiny budget every step runs in chunks; only float rounding may differ, so a
    label may change only where two candidates are within ~1e-5 of each other."""
    cls, masks, pixel_mask = padded_batch([(64, 80), (45, 70)], (64, 80), seed=13, queries=40, classes=11)
    proc = Mask2FormerImageProcessor()
    outputs = outputs_of(cls, masks, pixel_mask)
    targets = [(70, 90), (51, 77)]
    budget = 40_000  # a few maps: forces query chunks of 16 and class chunks of a few classes
    resizer = MaskResizer(masks[0], (64, 80), (64, 80), (70, 90), budget)
    assert resizer.chunk_size() < 40 and not resizer.fits_in_one_chunk()
    sem = proc.post_process_semantic_segmentation(outputs, targets, max_bytes=budget)
    pan = proc.post_process_panoptic_segmentation(outputs, target_sizes=targets, label_ids_to_fuse={2},
                                                  max_bytes=budget)
    for i, size in enumerate([(64, 80), (45, 70)]):
        full = ref_resize(masks[i], (64, 80), size, targets[i])
        scores = ref_semantic(cls[i], full)
        top2 = scores.topk(2, dim=0).values
        differ = sem[i] != scores.argmax(0)
        assert not (differ & (top2[0] - top2[1] > 1e-5)).any()
        r_seg, r_info = ref_panoptic(cls[i], full, stuff=(2,))
        assert [{k: s[k] for k in ("id", "isthing", "category_id")} for s in pan[i]["segments_info"]] == r_info
        assert (pan[i]["segmentation"] != r_seg).float().mean() < 1e-3
        ours = instance_inference(cls[i], MaskResizer(masks[i], (64, 80), size, targets[i], budget), max_bytes=budget)
        same_instances(ours, ref_instance(cls[i], full), exact=False)


def test_large_outputs_are_chunked_within_budget():
    resizer = MaskResizer(torch.zeros(100, 256, 200), (1024, 800), (1024, 800), (2048, 1024))
    step, per_query = resizer.chunk_size(), 4 * (1024 * 800 + 2 * 2048 * 1024)
    assert step % 8 == 0 and step < 100 and not resizer.fits_in_one_chunk()
    assert step == 8 or step * per_query <= resizer.max_bytes // 2  # 8 is the floor


def test_half_precision_outputs_are_accepted():
    cls, masks, pixel_mask = padded_batch([(32, 32)], (32, 32), seed=17)
    proc = Mask2FormerImageProcessor()
    half = outputs_of(cls.half(), masks.half(), pixel_mask)
    sem = proc.post_process_semantic_segmentation(half)
    expected = ref_semantic(cls[0].half().float(), ref_resize(masks[0].half().float(), (32, 32), (32, 32), (32, 32)))
    assert torch.equal(sem[0], expected.argmax(0))


@pytest.mark.slow
def test_large_target_memory_is_bounded():
    """2048x1024 output, 100 queries, 133 classes: peak resident memory stays well under the
    ~2 GB that full-size (Q, H, W) and (C, H, W) maps would need together."""
    script = r"""
import resource, torch
from types import SimpleNamespace
from mask2former.processor import Mask2FormerImageProcessor
torch.manual_seed(0)
out = SimpleNamespace(class_queries_logits=torch.randn(1, 100, 134), masks_queries_logits=torch.randn(1, 100, 200, 256),
                      pixel_mask=torch.ones(1, 800, 1024, dtype=torch.int64))
p = Mask2FormerImageProcessor()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
p.post_process_semantic_segmentation(out, target_sizes=[(1024, 2048)])
p.post_process_panoptic_segmentation(out, threshold=0.0, target_sizes=[(1024, 2048)])
p.post_process_instance_segmentation(out, threshold=0.0, target_sizes=[(1024, 2048)])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert int(done.stdout.strip().splitlines()[-1]) < 800  # MiB; the default budget is 256 MiB


def test_threshold_zero_keeps_the_originals_full_list_with_empty_masks():
    """The original's instance_inference returns exactly test_topk_per_image instances, those
    whose binary mask is empty (score 0) included; drop_empty is the opt-in filter."""
    cls, masks = random_outputs(1, 20, 9, (16, 20), seed=4)
    masks[0, :8] = -5.0  # eight queries draw nothing at all
    outputs = outputs_of(cls, masks, None)
    proc = Mask2FormerImageProcessor()
    full = proc.post_process_instance_segmentation(outputs, threshold=0.0, return_binary_maps=True)[0]
    r_scores, r_labels, _, r_masks = ref_instance(cls[0], F.interpolate(masks, size=(64, 80), mode="bilinear",
                                                                          align_corners=False)[0], 100)
    info = full["segments_info"]
    assert len(info) == 100
    empty = [s for s in info if s["area"] == 0]
    assert empty and all(s["score"] == 0.0 for s in empty)
    assert sorted(s["score"] for s in info) == sorted(r_scores.tolist())
    assert int((~r_masks.flatten(1).any(1)).sum()) == len(empty)
    dropped = proc.post_process_instance_segmentation(outputs, threshold=0.0, drop_empty=True)[0]["segments_info"]
    assert len(dropped) == 100 - len(empty) and all(s["area"] > 0 for s in dropped)
