"""Turning network outputs into semantic, instance and panoptic predictions, as the original
Mask2Former does (``MaskFormer.semantic_inference / instance_inference / panoptic_inference``
with detectron2's ``sem_seg_postprocess``), not transformers' fixed 384x384 shortcut.

Per image, the mask logits (Q, H/4, W/4) are upsampled bilinearly to the padded input size,
cropped to the image's valid (unpadded) region, and resized bilinearly to the output size;
then the three inferences run on them. :class:`MaskResizer` does that chain for a bounded
number of queries at a time, so a 2048x1024 output with 100 queries never holds all
full-size masks at once (peak ~2x ``max_bytes``, 256 MiB by default). While everything
fits in one chunk, the original's tensor operations run on the same shapes, so results are
bit-identical to the original run image by image on the same machine; past that, chunking
can only change float rounding (in tests it changed nothing), i.e. exact ties.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MAX_BYTES = 256 * 2**20  # budget for full-size maps held at once (peak is ~1.5-2x)

Size = tuple[int, int]


def _bilinear(x: Tensor, size: Size) -> Tensor:
    """(N, h, w) -> (N, *size); a same-size bilinear resize is the identity, so skip it."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


class MaskResizer:
    """Mask logits of one image at output resolution, a chunk of queries at a time.

    mask_logits: (Q, h, w). padded_size: the network input size the logits are upsampled to
    first (default: (h, w), i.e. already there). valid_size: the image's unpadded top-left
    region of the padded input (default: all of it). output_size: the final size (default:
    valid_size).
    """

    def __init__(
        self,
        mask_logits: Tensor,
        padded_size: Optional[Size] = None,
        valid_size: Optional[Size] = None,
        output_size: Optional[Size] = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if mask_logits.dim() != 3:
            raise ValueError(f"mask logits must be (Q, h, w); got {tuple(mask_logits.shape)}")
        # float16/bfloat16 outputs are post-processed in float32 (thresholds and ties behave)
        self.mask_logits = mask_logits if mask_logits.dtype in (torch.float32, torch.float64) else mask_logits.float()
        self.padded_size: Size = tuple(padded_size or mask_logits.shape[-2:])  # type: ignore[assignment]
        self.valid_size: Size = tuple(valid_size or self.padded_size)  # type: ignore[assignment]
        self.output_size: Size = tuple(output_size or self.valid_size)  # type: ignore[assignment]
        vh, vw = self.valid_size
        if not (0 < vh <= self.padded_size[0] and 0 < vw <= self.padded_size[1]):
            raise ValueError(f"valid region {self.valid_size} does not fit the padded size {self.padded_size}")
        self.max_bytes = max_bytes
        self._all: Optional[Tensor] = None

    @property
    def num_queries(self) -> int:
        return self.mask_logits.shape[0]

    def _pixels(self, *sizes: Size) -> int:
        return max(h * w for h, w in sizes)

    def chunk_size(self) -> int:
        """Queries per chunk: per query, a padded-size map and two output-size maps (the
        resized logits and what is derived from them) within half the budget."""
        per_query = 4 * (self._pixels(self.padded_size) + 2 * self._pixels(self.output_size))
        step = self.max_bytes // 2 // per_query
        if step >= self.num_queries:
            return step
        # Whole multiples of 8 maps keep every element in the same SIMD lane as in one big
        # tensor, which in practice keeps torch's CPU kernels bit-identical across chunkings.
        return max(8, step // 8 * 8)

    def fits_in_one_chunk(self) -> bool:
        return self.chunk_size() >= self.num_queries

    def upsample(self, index: Optional[Tensor] = None) -> Tensor:
        """Logits at the padded input size: (k, Hp, Wp)."""
        masks = self.mask_logits if index is None else self.mask_logits[index]
        return _bilinear(masks, self.padded_size)

    def crop_resize(self, maps: Tensor) -> Tensor:
        """detectron2's ``sem_seg_postprocess``: (k, Hp, Wp) -> valid crop -> (k, *output_size)."""
        vh, vw = self.valid_size
        return _bilinear(maps[:, :vh, :vw], self.output_size)

    def all(self) -> Tensor:
        """Every query's logits at output size, (Q, H, W), as the original computes them."""
        if self._all is None:
            self._all = self.crop_resize(self.upsample())
        return self._all

    def chunks(self, index: Optional[Tensor] = None, sigmoid: bool = False) -> Iterator[tuple[int, Tensor]]:
        """Yield (start, logits or probabilities of queries index[start:start+k]) covering
        ``index`` (default: all queries); each block is (k, H, W).

        When everything fits, the sigmoid runs on all queries before selecting, as in the
        original (element-wise kernels may round a tensor's tail differently). Blocks are
        fresh tensors the caller may modify, except when ``index`` is None and all fits.
        """
        if self.fits_in_one_chunk():
            full = self.all().sigmoid() if sigmoid else self.all()
            yield 0, (full if index is None else full[index])
            return
        index = torch.arange(self.num_queries, device=self.mask_logits.device) if index is None else index
        step = self.chunk_size()
        for start in range(0, index.numel(), step):
            block = self.crop_resize(self.upsample(index[start:start + step]))
            yield start, (block.sigmoid_() if sigmoid else block)


def _as_resizer(masks: Union[Tensor, MaskResizer], max_bytes: int) -> MaskResizer:
    return masks if isinstance(masks, MaskResizer) else MaskResizer(masks, max_bytes=max_bytes)


def _class_probs(class_logits: Tensor) -> Tensor:
    return F.softmax(class_logits.float(), dim=-1)


# -- semantic ---------------------------------------------------------------------------


def semantic_inference(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """The original's per-class scores: (Q, C+1), (Q, H, W) -> (C, H, W).

    score[c] = sum over queries of p(c | query) * sigmoid(mask of query); the last class
    column is "no object" and is dropped.
    """
    probs = _class_probs(class_logits)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_logits.float().sigmoid())


def _running_argmax(chunks: Iterator[tuple[int, Tensor]]) -> Tensor:
    """argmax over the class axis of (c, H, W) chunks given with their first class index;
    ties go to the lower index, as ``torch.argmax`` does."""
    best_val: Optional[Tensor] = None
    best_idx: Optional[Tensor] = None
    for start, scores in chunks:
        val, idx = scores.max(0)
        del scores  # let the chunk go before the generator makes the next one
        if best_val is None:
            best_val, best_idx = val, idx + start
        else:
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx + start, best_idx)
    assert best_idx is not None
    return best_idx


def semantic_segmentation(
    class_logits: Tensor,
    masks: Union[Tensor, MaskResizer],
    resize_before_inference: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Tensor:
    """Label map (H, W) int64 = argmax of :func:`semantic_inference`, memory-bounded.

    ``resize_before_inference`` (the original's SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE, on
    for its panoptic/instance models): True resizes the mask logits to the output, then
    combines; False combines at the padded input size and resizes the C class maps (the
    original's semantic-only models).
    """
    resizer = _as_resizer(masks, max_bytes)
    probs = _class_probs(class_logits)[..., :-1]  # (Q, C)
    num_classes, num_queries = probs.shape[1], probs.shape[0]
    step = resizer.chunk_size()

    def sigmoid_chunks() -> Iterator[tuple[int, Tensor]]:
        if resize_before_inference:
            yield from resizer.chunks(sigmoid=True)
        elif step >= num_queries:
            yield 0, resizer.upsample().sigmoid()
        else:
            for start in range(0, num_queries, step):
                index = torch.arange(start, min(start + step, num_queries), device=probs.device)
                yield start, resizer.upsample(index).sigmoid_()  # a fresh copy

    sizes = [resizer.output_size] if resize_before_inference else [resizer.padded_size, resizer.output_size]
    class_step = max(1, max_bytes // (4 * sum(h * w for h, w in sizes)))  # class maps held per chunk
    cached = list(sigmoid_chunks()) if step >= num_queries else None  # reused by every class chunk

    def class_chunks() -> Iterator[tuple[int, Tensor]]:
        for c0 in range(0, num_classes, class_step):
            cls = probs[:, c0:c0 + class_step] if class_step < num_classes else probs
            acc: Optional[Tensor] = None
            for start, sig in cached if cached is not None else sigmoid_chunks():
                part_cls = cls[start:start + sig.shape[0]]
                if acc is None:
                    acc = torch.einsum("qc,qhw->chw", part_cls, sig)
                else:  # accumulate in place: no second class-chunk-sized buffer
                    acc.view(acc.shape[0], -1).addmm_(part_cls.t(), sig.reshape(sig.shape[0], -1))
            assert acc is not None
            yield c0, (acc if resize_before_inference else resizer.crop_resize(acc))

    return _running_argmax(class_chunks())


# -- panoptic ---------------------------------------------------------------------------


def panoptic_inference(
    class_logits: Tensor,
    masks: Union[Tensor, MaskResizer],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    mask_threshold: float = 0.5,
    stuff_ids: Collection[int] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[Tensor, list[dict]]:
    """The original panoptic inference: ``(segment-id map (H, W) int32, segments_info)``.

    Queries whose best class is "no object" or scores <= ``object_mask_threshold`` are
    dropped; each pixel goes to the query maximizing score * sigmoid(mask), and is painted
    only where that query's own mask is >= ``mask_threshold``. A query whose won area is
    less than ``overlap_threshold`` of its own mask area is dropped. Classes in
    ``stuff_ids`` get one segment per class (later queries merge into it); other classes
    get one segment per query. Id 0 = no segment. segments_info entries: id, category_id
    and label_id (the class), isthing, was_fused (= not isthing), score (of the query that
    opened the segment) and area (pixels).
    """
    resizer = _as_resizer(masks, max_bytes)
    probs = _class_probs(class_logits)
    num_classes = probs.shape[1] - 1
    scores, labels = probs.max(-1)
    kept = (labels.ne(num_classes) & (scores > object_mask_threshold)).nonzero().flatten()
    height, width = resizer.output_size
    device = class_logits.device
    if kept.numel() == 0:
        return torch.zeros((height, width), dtype=torch.int32, device=device), []

    # One pass over query chunks: running argmax of score * mask, whether the winner's own
    # mask passes the threshold there, and each query's own mask area.
    own_area = torch.zeros(kept.numel(), dtype=torch.int64, device=device)
    best: Optional[Tensor] = None
    for start, mask_probs in resizer.chunks(kept, sigmoid=True):  # (k, H, W), a fresh tensor
        stop = start + mask_probs.shape[0]
        above = mask_probs >= mask_threshold
        weighted = mask_probs.mul_(scores[kept[start:stop]].view(-1, 1, 1))  # in place: memory
        own_area[start:stop] = above.flatten(1).sum(1)
        val, idx = weighted.max(0)
        idx_above = above.gather(0, idx[None])[0]
        if best is None:
            best, winner, winner_above = val, idx + start, idx_above
        else:
            better = val > best
            best = torch.where(better, val, best)
            winner = torch.where(better, idx + start, winner)
            winner_above = torch.where(better, idx_above, winner_above)

    won_area = torch.bincount(winner.flatten(), minlength=kept.numel()).tolist()
    painted_area = torch.bincount(winner[winner_above], minlength=kept.numel()).tolist()
    own = own_area.tolist()
    stuff = set(int(s) for s in stuff_ids)
    segment_of = [0] * kept.numel()
    segments_info: list[dict] = []
    by_id: dict[int, dict] = {}
    stuff_segment: dict[int, int] = {}
    for k in range(kept.numel()):
        label = int(labels[kept[k]])
        if not (won_area[k] > 0 and own[k] > 0 and painted_area[k] > 0):
            continue
        if won_area[k] / own[k] < overlap_threshold:
            continue
        isthing = label not in stuff
        if not isthing and label in stuff_segment:
            segment_of[k] = stuff_segment[label]
            by_id[segment_of[k]]["area"] += painted_area[k]
            continue
        segment_id = len(segments_info) + 1
        if not isthing:
            stuff_segment[label] = segment_id
        segment_of[k] = segment_id
        info = {
            "id": segment_id, "category_id": label, "label_id": label, "isthing": isthing,
            "was_fused": not isthing, "score": float(scores[kept[k]]), "area": painted_area[k],
        }
        segments_info.append(info)
        by_id[segment_id] = info

    lookup = torch.tensor(segment_of, dtype=torch.int32, device=device)
    panoptic = torch.where(winner_above, lookup[winner], torch.zeros((), dtype=torch.int32, device=device))
    return panoptic.to(torch.int32), segments_info


# -- instance ---------------------------------------------------------------------------


@dataclass
class InstancePredictions:
    """Instances of one image, best score first. masks: (N, H, W) bool, or None if not asked."""

    scores: Tensor
    labels: Tensor
    query_indices: Tensor
    areas: Tensor
    masks: Optional[Tensor]


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1); got {p}")
    return 0.0 if p == 0.5 else math.log(p / (1.0 - p))  # 0.5 exactly: the original's `> 0`


def instance_inference(
    class_logits: Tensor,
    masks: Union[Tensor, MaskResizer],
    top_k: int = 100,
    thing_ids: Optional[Collection[int]] = None,
    mask_threshold: float = 0.5,
    score_threshold: Optional[float] = None,
    drop_empty: bool = False,
    return_masks: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> InstancePredictions:
    """The original instance inference.

    The ``top_k`` best (query, class) pairs over all queries x classes (the original's
    TEST.DETECTIONS_PER_IMAGE, 100), optionally only classes in ``thing_ids``; mask =
    sigmoid(logits) > ``mask_threshold``; score = class probability x mean mask probability
    inside the mask. ``score_threshold`` / ``drop_empty`` filter the result (the original
    keeps all); masks are computed only for what is kept.
    """
    resizer = _as_resizer(masks, max_bytes)
    probs = _class_probs(class_logits)[:, :-1]  # (Q, C)
    num_classes = probs.shape[1]
    k = min(top_k, probs.numel())
    class_scores, flat = probs.flatten().topk(k, sorted=False)  # as the original; sorted below
    labels = flat % num_classes
    queries = torch.div(flat, num_classes, rounding_mode="floor")
    if thing_ids is not None:
        is_thing = torch.isin(labels, torch.tensor(sorted(thing_ids), dtype=labels.dtype, device=labels.device))
        class_scores, labels, queries = class_scores[is_thing], labels[is_thing], queries[is_thing]

    threshold = _logit(mask_threshold)
    height, width = resizer.output_size
    if resizer.fits_in_one_chunk() and 8 * queries.numel() * height * width <= max_bytes:
        # Small enough to gather one mask per result, exactly as the original does.
        mask_score, areas = _mask_stats(resizer.all()[queries], threshold)
    else:
        # Mask scores depend on the query only: compute them once per distinct query.
        unique, inverse = torch.unique(queries, return_inverse=True)
        mask_score = torch.zeros(unique.numel(), device=probs.device)
        area = torch.zeros(unique.numel(), dtype=torch.int64, device=probs.device)
        for start, logits in resizer.chunks(unique):
            stop = start + logits.shape[0]
            mask_score[start:stop], area[start:stop] = _mask_stats(logits, threshold)
        mask_score, areas = mask_score[inverse], area[inverse]
    scores = class_scores * mask_score

    order = torch.sort(scores, descending=True, stable=True).indices
    keep = torch.ones_like(order, dtype=torch.bool)
    if score_threshold is not None:
        keep &= scores[order] >= score_threshold
    if drop_empty:
        keep &= areas[order] > 0
    order = order[keep]
    result = InstancePredictions(scores[order], labels[order], queries[order], areas[order], None)
    if return_masks:
        result.masks = instance_masks(resizer, result.query_indices, mask_threshold)
    return result


def _mask_stats(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(k, H, W) logits -> mean mask probability inside the binary mask, and its area."""
    inside = (logits > threshold).flatten(1)
    binary = inside.float()
    mean_prob = (logits.sigmoid().flatten(1) * binary).sum(1) / (binary.sum(1) + 1e-6)
    return mean_prob, inside.sum(1)


def instance_masks(resizer: MaskResizer, queries: Tensor, mask_threshold: float = 0.5) -> Tensor:
    """Binary masks (N, H, W) of the given queries (repeats allowed)."""
    height, width = resizer.output_size
    out = torch.zeros((queries.numel(), height, width), dtype=torch.bool, device=queries.device)
    if queries.numel() == 0:
        return out
    unique, inverse = torch.unique(queries, return_inverse=True)
    threshold = _logit(mask_threshold)
    for start, logits in resizer.chunks(unique):
        for j in range(logits.shape[0]):
            out[inverse == start + j] = logits[j] > threshold
    return out


# -- batches ----------------------------------------------------------------------------


def _field(outputs: object, name: str) -> Optional[Tensor]:
    value = getattr(outputs, name, None)
    if value is None and isinstance(outputs, dict):
        value = outputs.get(name)
    return value


def _valid_size(mask: Tensor) -> Size:
    """Extent of the valid (top-left) region of a (Hp, Wp) pixel mask."""
    rows, cols = mask.bool().any(1).nonzero(), mask.bool().any(0).nonzero()
    if rows.numel() == 0:
        raise ValueError("pixel_mask marks no pixel of an image as valid")
    return int(rows.max()) + 1, int(cols.max()) + 1


def image_resizers(
    outputs: object,
    target_sizes: Optional[Union[Tensor, Collection[Collection[int]]]] = None,
    pixel_mask: Optional[Tensor] = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[tuple[Tensor, MaskResizer]]:
    """(class logits (Q, C+1), :class:`MaskResizer`) per image of a batch of outputs.

    ``outputs`` has ``class_queries_logits`` (B, Q, C+1) and ``masks_queries_logits``
    (B, Q, h, w), and may have ``pixel_mask`` (B, Hp, Wp) (the ``pixel_mask`` argument wins).
    Without a pixel mask, the padded input is taken to be (4h, 4w) and wholly valid.
    ``target_sizes``: (height, width) per image; default: each image's valid region.
    """
    class_logits = _field(outputs, "class_queries_logits")
    mask_logits = _field(outputs, "masks_queries_logits")
    if class_logits is None or mask_logits is None:
        raise TypeError("outputs must have class_queries_logits and masks_queries_logits")
    pixel_mask = pixel_mask if pixel_mask is not None else _field(outputs, "pixel_mask")
    batch = class_logits.shape[0]
    if target_sizes is not None and len(target_sizes) != batch:
        raise ValueError(f"got {len(target_sizes)} target sizes for a batch of {batch}")
    if pixel_mask is not None and pixel_mask.shape[0] != batch:
        raise ValueError(f"pixel_mask has {pixel_mask.shape[0]} images for a batch of {batch}")
    result = []
    for i in range(batch):
        if pixel_mask is None:
            padded = (4 * mask_logits.shape[-2], 4 * mask_logits.shape[-1])
            valid = padded
        else:
            padded = tuple(pixel_mask.shape[-2:])
            valid = _valid_size(pixel_mask[i])
        target = None if target_sizes is None else tuple(int(v) for v in target_sizes[i])
        resizer = MaskResizer(mask_logits[i], padded, valid, target, max_bytes)  # type: ignore[arg-type]
        result.append((class_logits[i], resizer))
    return result
