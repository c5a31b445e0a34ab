"""Test-time augmentation (multi-scale + horizontal flip) and sliding-window inference for
semantic segmentation.

Both work on per-class scores, the original's ``semantic_inference`` output
(sum over queries of p(class | query) * sigmoid(mask)), never on label maps:

* one *view* is the image resized to some size, maybe mirrored, padded to a multiple of 32
  and run through the network; its class scores are combined at the padded input size,
  cropped to the valid region, resized to the image's size and mirrored back, exactly as
  :class:`~mask2former.segmenter.Segmenter` does for plain semantic inference;
* TTA averages the scores of every (scale, flip) view, as the original's
  ``SemanticSegmentorWithTTA`` does: the base test size times each scale (default
  0.5 ... 1.75), the long side capped at ``max_size`` (default: the base long side times the
  largest scale; one cap for all scales, like the original's ``TEST.AUG.MAX_SIZE``);
* sliding-window inference cuts the resized image into ``window``-sized tiles, the last tile
  of a row/column shifted back inside the image (mmsegmentation's ``slide_inference``),
  sums each tile's scores into a (C, h, w) map plus a count map, divides, and resizes the
  result to the image's size. A dimension smaller than the window is not padded up to the
  window (only to a multiple of 32, like every input), so an image that fits in one window
  gives exactly plain inference. It can replace the single forward of every TTA view.

Memory: the result and one view are (C, H, W) float32 maps; class scores are built a chunk
of classes/queries at a time within ``max_bytes``.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .postprocess import DEFAULT_MAX_BYTES, MaskResizer
from .processor import resized_size

if TYPE_CHECKING:  # the Segmenter imports this module
    from .segmenter import Segmenter

DEFAULT_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
DEFAULT_WINDOW_OVERLAP = 1 / 3  # mmsegmentation's Cityscapes setting: 512x1024 crops, stride 341x682
Size = tuple[int, int]


def check_options(task: str, tta: bool, scales: Sequence[float], window: Optional[Sequence[int]],
                  overlap: float) -> None:
    """Raise ValueError (one line) on options TTA / sliding windows cannot run with."""
    if (tta or window is not None) and task != "semantic":
        raise ValueError(f"test-time augmentation and sliding-window inference are for the semantic task only "
                         f"(the task here is {task})")
    if tta and (not scales or any(not s > 0 for s in scales)):
        raise ValueError(f"TTA scales must be positive numbers; got {list(scales)}")
    if window is not None and (len(window) != 2 or any(int(v) < 1 for v in window)):
        raise ValueError(f"sliding window must be two positive sizes (H W); got {list(window)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"window overlap must be in [0, 1); got {overlap}")


# -- one forward ------------------------------------------------------------------------


def scaled_size(seg: "Segmenter", height: int, width: int, scale: float = 1.0,
                max_size: Optional[int] = None) -> Size:
    """Network input size of an image at ``scale`` times the segmenter's base test size."""
    if scale == 1.0 and max_size is None:
        return seg.processed_size(height, width)
    if seg.resize == "original":
        from .segmenter import original_test_size

        short, long = seg.info.test_size
        return original_test_size(height, width, int(short * scale), max_size or int(long * scale))
    p = seg.processor
    if not p.do_resize:
        return max(1, round(height * scale)), max(1, round(width * scale))
    size = {k: int(v * scale) for k, v in p.size.items()}
    if max_size is not None and "longest_edge" in size:
        size["longest_edge"] = int(max_size)
    return resized_size(height, width, size, int(p.size_divisor or 0))


def resized_rgb(seg: "Segmenter", rgb: np.ndarray, size: Size) -> np.ndarray:
    """An HxWx3 uint8 image resized to ``size`` with the resampling filter the segmenter's
    own preprocessing uses."""
    if tuple(size) != rgb.shape[:2]:
        resample = seg.processor.resample if seg.resize == "config" else Image.Resampling.BILINEAR
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling(resample)))
    return rgb


def image_tensor(seg: "Segmenter", rgb: np.ndarray, size: Size) -> Tensor:
    """(3, h, w) normalised pixels of an HxWx3 uint8 image resized to ``size``."""
    return seg.processor([resized_rgb(seg, rgb, size)], do_resize=False)["pixel_values"][0]


def _forward(seg: "Segmenter", batch: Tensor) -> tuple[Tensor, Tensor, Size, Size]:
    """Run (B, 3, h, w) same-size inputs: class logits, mask logits, padded and valid size."""
    h, w = batch.shape[-2:]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    pixel_mask = torch.zeros((batch.shape[0], ph, pw), dtype=torch.long, device=seg.device)
    pixel_mask[:, :h, :w] = 1
    x = F.pad(batch, (0, pw - w, 0, ph - h)).to(seg.device)
    out = seg.model(pixel_values=x, pixel_mask=pixel_mask)
    return out.class_queries_logits, out.masks_queries_logits, (ph, pw), (h, w)


def class_scores(class_logits: Tensor, resizer: MaskResizer, max_bytes: int = DEFAULT_MAX_BYTES) -> Tensor:
    """(C, *output_size) scores of one image: combined at the padded input size, then the
    valid region cropped and resized (the original's semantic-only order of operations).

    Everything at once when it fits ``max_bytes`` (then equal to ``semantic_inference`` on
    the upsampled masks); otherwise a chunk of classes, and within it of queries, at a time.
    """
    probs = F.softmax(class_logits.float(), dim=-1)[..., :-1]  # (Q, C); "no object" dropped
    num_queries, num_classes = probs.shape
    (ph, pw), (oh, ow) = resizer.padded_size, resizer.output_size
    out = torch.empty((num_classes, oh, ow), dtype=torch.float32, device=probs.device)
    q_step = resizer.chunk_size()
    c_step = max(1, max_bytes // (4 * (ph * pw + oh * ow)))
    cached = resizer.upsample().sigmoid() if q_step >= num_queries else None

    def sigmoids() -> Iterator[tuple[int, Tensor]]:
        if cached is not None:
            yield 0, cached
            return
        for q0 in range(0, num_queries, q_step):
            index = torch.arange(q0, min(q0 + q_step, num_queries), device=probs.device)
            yield q0, resizer.upsample(index).sigmoid_()

    for c0 in range(0, num_classes, c_step):
        cls = probs[:, c0:c0 + c_step]
        acc: Optional[Tensor] = None
        for q0, sig in sigmoids():
            part = cls[q0:q0 + sig.shape[0]]
            if acc is None:
                acc = torch.einsum("qc,qhw->chw", part, sig)
            else:
                acc.view(acc.shape[0], -1).addmm_(part.t(), sig.reshape(sig.shape[0], -1))
        assert acc is not None
        out[c0:c0 + cls.shape[1]] = resizer.crop_resize(acc)
    return out


def _resize_scores(scores: Tensor, size: Size) -> Tensor:
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]


# -- views ------------------------------------------------------------------------------


@torch.inference_mode()
def view_scores(seg: "Segmenter", rgb: np.ndarray, size: Optional[Size] = None, flip: bool = False) -> Tensor:
    """(C, H, W) scores of one view: ``rgb`` resized to ``size`` (default: the plain test
    size), mirrored if ``flip``, one forward, scores at the image's size, mirrored back."""
    height, width = rgb.shape[:2]
    x = image_tensor(seg, rgb, size or seg.processed_size(height, width))
    if flip:
        x = x.flip(-1)
    cls, masks, padded, valid = _forward(seg, x[None])
    scores = class_scores(cls[0], MaskResizer(masks[0], padded, valid, (height, width)))
    return scores.flip(-1) if flip else scores


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Tile offsets along one axis: every ``stride``, the last one moved back so that the
    tile ends at the border; one tile at 0 when the window covers everything."""
    if length <= window:
        return [0]
    count = -(-(length - window) // stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


def window_stride(window: Sequence[int], overlap: float) -> Size:
    return max(1, int(window[0] * (1 - overlap))), max(1, int(window[1] * (1 - overlap)))


def tiles(size: Size, window: Sequence[int],
          overlap: float = DEFAULT_WINDOW_OVERLAP) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every tile covering an image of ``size``; all tiles have one size."""
    (h, w), (wh, ww) = size, window
    sy, sx = window_stride(window, overlap)
    th, tw = min(h, wh), min(w, ww)
    return [(y, y + th, x, x + tw) for y in window_starts(h, wh, sy) for x in window_starts(w, ww, sx)]


@torch.inference_mode()
def sliding_window_scores(seg: "Segmenter", rgb: np.ndarray, window: Sequence[int],
                          overlap: float = DEFAULT_WINDOW_OVERLAP, size: Optional[Size] = None,
                          flip: bool = False) -> Tensor:
    """(C, H, W) scores of one view computed tile by tile: ``rgb`` resized to ``size``
    (default: the plain test size), mirrored if ``flip``, cut into ``window`` (h, w) tiles
    overlapping by ``overlap`` of the window; tile scores are summed and divided by how many
    tiles cover each pixel, then resized to the image's size and mirrored back."""
    height, width = rgb.shape[:2]
    scores = _resize_scores(_window_average(seg, rgb, window, overlap, size, flip), (height, width))
    return scores.flip(-1) if flip else scores


def _window_average(seg: "Segmenter", rgb: np.ndarray, window: Sequence[int], overlap: float,
                    size: Optional[Size] = None, flip: bool = False) -> Tensor:
    """(C, h, w) tile-averaged scores at the network's input size (mirrored if ``flip``)."""
    x = image_tensor(seg, rgb, size or seg.processed_size(*rgb.shape[:2]))
    if flip:
        x = x.flip(-1)
    h, w = x.shape[-2:]
    boxes = tiles((h, w), window, overlap)
    acc: Optional[Tensor] = None
    count = torch.zeros((h, w), dtype=torch.float32, device=seg.device)
    for start in range(0, len(boxes), seg.batch_size):  # tiles share one size: batch them
        part = boxes[start:start + seg.batch_size]
        cls, masks, padded, valid = _forward(seg, torch.stack([x[:, y0:y1, x0:x1] for y0, y1, x0, x1 in part]))
        for k, (y0, y1, x0, x1) in enumerate(part):
            tile = class_scores(cls[k], MaskResizer(masks[k], padded, valid))
            if acc is None:
                acc = torch.zeros((tile.shape[0], h, w), dtype=torch.float32, device=seg.device)
            acc[:, y0:y1, x0:x1] += tile
            count[y0:y1, x0:x1] += 1
    assert acc is not None
    return acc.div_(count)


def sliding_window_labels(seg: "Segmenter", rgb: np.ndarray, window: Sequence[int],
                          overlap: float = DEFAULT_WINDOW_OVERLAP, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """``labels_from_scores(sliding_window_scores(...))`` without holding the (C, H, W) scores
    at the image's size. Memory: the (C, h, w) map at the network's input size plus one
    block of classes at the image's size (:mod:`mask2former.window_stream` streams the
    (C, h, w) map too; this is its reference)."""
    return labels_from_average(_window_average(seg, rgb, window, overlap), rgb.shape[:2], max_bytes)


def labels_from_average(avg: Tensor, size: Size, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """(H, W) class map of (C, h, w) scores resized to ``size``: a block of classes is resized
    at a time (bilinear resizing treats channels independently, so the values are the same)
    and folded into a running argmax (ties to the lower class)."""
    height, width = size
    step = max(1, max_bytes // (4 * height * width))
    best: Optional[Tensor] = None
    labels: Optional[Tensor] = None
    for c0 in range(0, avg.shape[0], step):
        block = _resize_scores(avg[c0:c0 + step], (height, width))
        index = block.argmax(0)
        value = block.gather(0, index[None])[0]
        if best is None or labels is None:
            best, labels = value, index
        else:
            better = value > best  # strictly: a tie keeps the earlier (lower) class
            best = torch.where(better, value, best)
            labels = torch.where(better, index + c0, labels)
    assert labels is not None
    return labels.cpu().numpy().astype(np.int64)


@torch.inference_mode()
def tta_scores(seg: "Segmenter", rgb: np.ndarray, scales: Sequence[float] = DEFAULT_TTA_SCALES, flip: bool = True,
               window: Optional[Sequence[int]] = None, overlap: float = DEFAULT_WINDOW_OVERLAP,
               max_size: Optional[int] = None) -> Tensor:
    """(C, H, W) mean of the scores of every (scale, flip) view; each view by one forward, or
    by sliding windows when ``window`` is given. ``max_size`` caps the long side of every
    scaled size (default: the base long side times the largest scale)."""
    height, width = rgb.shape[:2]
    if seg.resize == "original" and max_size is None:
        max_size = int(seg.info.test_size[1] * max(scales))
    total: Optional[Tensor] = None
    views = 0
    for scale in scales:
        size = scaled_size(seg, height, width, scale, max_size if seg.resize == "original" else None)
        for mirrored in ((False, True) if flip else (False,)):
            if window is not None:
                s = sliding_window_scores(seg, rgb, window, overlap, size, mirrored)
            else:
                s = view_scores(seg, rgb, size, mirrored)
            total = s if total is None else total.add_(s)
            views += 1
    assert total is not None
    return total.div_(views)


def predict_scores(seg: "Segmenter", rgb: np.ndarray) -> Tensor:
    """(C, H, W) scores with the segmenter's own TTA / sliding-window settings."""
    if seg.tta:
        return tta_scores(seg, rgb, seg.tta_scales, seg.tta_flip, seg.sliding_window, seg.window_overlap)
    if seg.sliding_window is not None:
        return sliding_window_scores(seg, rgb, seg.sliding_window, seg.window_overlap)
    return view_scores(seg, rgb)


def predict_labels(seg: "Segmenter", rgb: np.ndarray) -> np.ndarray:
    """(H, W) class map with the segmenter's TTA / sliding-window settings; sliding windows
    alone are streamed (memory bounded by a band of windows, see window_stream)."""
    if seg.sliding_window is not None and not seg.tta:
        from .window_stream import streamed_window_labels

        return streamed_window_labels(seg, rgb, seg.sliding_window, seg.window_overlap)
    return labels_from_scores(predict_scores(seg, rgb))


def labels_from_scores(scores: Tensor) -> np.ndarray:
    """(H, W) int64 class map: argmax over classes (ties to the lower class, like the original)."""
    return scores.argmax(0).cpu().numpy().astype(np.int64)


# -- command line -----------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The TTA / sliding-window flags shared by ``segment`` and ``evaluate``."""
    g = p.add_argument_group("semantic test-time augmentation and sliding windows (semantic task only)")
    g.add_argument("--tta", action="store_true",
                   help="average class scores over scales x horizontal flip, like the original's "
                        "SemanticSegmentorWithTTA (semantic task only; default: off)")
    g.add_argument("--tta-scales", type=float, nargs="+", default=list(DEFAULT_TTA_SCALES), metavar="S",
                   help="scales of the base test size (default: %(default)s)")
    g.add_argument("--tta-no-flip", action="store_true", help="TTA without the mirrored views (default: with them)")
    g.add_argument("--sliding-window", type=int, nargs=2, metavar=("H", "W"),
                   help="run on H x W tiles of the resized image and average overlapping scores "
                        "(semantic task only; default: off, one forward of the whole image)")
    g.add_argument("--window-overlap", type=float, default=DEFAULT_WINDOW_OVERLAP,
                   help="fraction of a window shared with the next tile (default: 1/3)")


def segmenter_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"tta": args.tta, "tta_scales": tuple(args.tta_scales), "tta_flip": not args.tta_no_flip,
            "sliding_window": tuple(args.sliding_window) if args.sliding_window else None,
            "window_overlap": args.window_overlap}
