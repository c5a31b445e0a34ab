"""Sliding-window semantic inference streamed in raster order: memory bounded by a band of
windows, not by the image.

The reference, :func:`mask2former.tta.sliding_window_labels`, sums every window's class
scores into one (C, h, w) map of the whole network input, divides by how many windows cover
each pixel, resizes to the image and takes the argmax. Here the windows run in the same
order and the same batches, so every forward and every sum is the same arithmetic and the
labels are bit-identical; but scores are kept only for the rows a later window can still
reach. Windows are in raster order, so once the next batch starts at row ``y`` every row
above ``y`` has all its windows summed: those rows are divided, turned into labels and
dropped. Pixels are normalised window by window from the resized 8-bit image.

* Network input at the image's size (no resize: the huge-image case, e.g. ``--resize
  config`` with a processor that keeps the size): the peak is the (C, band, w) band, band at
  most a window's height plus the window rows one batch spans, besides the image and its
  labels.
* Network input resized: bilinear resizing to the image's size mixes rows across any band
  boundary and PyTorch's kernel has no row offset, so the finished rows are gathered into
  the (C, h, w) average and resized the reference's way (a block of classes at a time):
  bounded by the network input size (the checkpoint's test size), not the image.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from . import tta
from .postprocess import DEFAULT_MAX_BYTES, MaskResizer

if TYPE_CHECKING:
    from .segmenter import Segmenter


class ScoreBand:
    """Score sums and window counts of the network-input rows [lo, lo + rows) still open.

    sums: (C, rows, w) float32; count: (rows, w) float32 (as the reference, so its division
    is the same).
    """

    def __init__(self, classes: int, width: int, device: torch.device):
        self.lo = 0
        self.sums = torch.zeros((classes, 0, width), dtype=torch.float32, device=device)
        self.count = torch.zeros((0, width), dtype=torch.float32, device=device)

    @property
    def hi(self) -> int:
        return self.lo + self.count.shape[0]

    def add(self, tile: Tensor, y0: int, y1: int, x0: int, x1: int) -> None:
        """Add one window's (C, y1 - y0, x1 - x0) scores, growing the band downwards."""
        if y1 > self.hi:
            extra = y1 - self.hi
            self.sums = torch.cat([self.sums, self.sums.new_zeros((self.sums.shape[0], extra, self.sums.shape[2]))], 1)
            self.count = torch.cat([self.count, self.count.new_zeros((extra, self.count.shape[1]))], 0)
        self.sums[:, y0 - self.lo:y1 - self.lo, x0:x1] += tile
        self.count[y0 - self.lo:y1 - self.lo, x0:x1] += 1

    def pop(self, upto: int) -> Tensor:
        """(C, upto - lo, w) averaged scores of the finished rows above ``upto``, dropped."""
        n = upto - self.lo
        avg = self.sums[:, :n].div(self.count[:n])
        self.sums, self.count = self.sums[:, n:].clone(), self.count[n:].clone()
        self.lo = upto
        return avg


def window_pixels(seg: "Segmenter", small: np.ndarray, box: tuple[int, int, int, int]) -> Tensor:
    """(3, y1 - y0, x1 - x0) normalised pixels of one window of the resized uint8 image:
    rescaling and normalising are element-wise, so equal to cropping the whole image's."""
    y0, y1, x0, x1 = box
    return seg.processor([np.ascontiguousarray(small[y0:y1, x0:x1])], do_resize=False)["pixel_values"][0]


@torch.inference_mode()
def streamed_window_labels(seg: "Segmenter", rgb: np.ndarray, window: Sequence[int],
                           overlap: float = tta.DEFAULT_WINDOW_OVERLAP,
                           max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """(H, W) int64 class map of an (H, W, 3) uint8 image, equal to
    ``tta.sliding_window_labels(seg, rgb, window, overlap, max_bytes)``."""
    p = seg.processor
    if p.pad_size is not None or p.pad_to_multiple_of:  # the whole input is padded first: reference path
        return tta.sliding_window_labels(seg, rgb, window, overlap, max_bytes)
    height, width = rgb.shape[:2]
    small = tta.resized_rgb(seg, rgb, seg.processed_size(height, width))
    h, w = small.shape[:2]
    resize = (h, w) != (height, width)
    boxes = tta.tiles((h, w), window, overlap)
    labels = np.empty((height, width), dtype=np.int64)
    average: Optional[Tensor] = None  # (C, h, w), only when resizing
    band: Optional[ScoreBand] = None
    for start in range(0, len(boxes), seg.batch_size):  # the reference's batches
        part = boxes[start:start + seg.batch_size]
        cls, masks, padded, valid = tta._forward(seg, torch.stack([window_pixels(seg, small, b) for b in part]))
        for k, box in enumerate(part):
            tile = tta.class_scores(cls[k], MaskResizer(masks[k], padded, valid))
            if band is None:
                band = ScoreBand(tile.shape[0], w, tile.device)
            band.add(tile, *box)
        assert band is not None
        done = boxes[start + seg.batch_size][0] if start + seg.batch_size < len(boxes) else h
        if done <= band.lo:
            continue
        lo = band.lo
        rows = band.pop(done)
        if resize:
            if average is None:
                average = rows.new_empty((rows.shape[0], h, w))
            average[:, lo:done] = rows
        else:
            labels[lo:done] = rows.argmax(0).cpu().numpy()  # first maximum: ties to the lower class
    if average is not None:
        return tta.labels_from_average(average, (height, width), max_bytes)
    return labels


def band_rows(size: tuple[int, int], window: Sequence[int], overlap: float, batch_size: int) -> int:
    """Most network-input rows a :class:`ScoreBand` holds at once for an input of ``size``."""
    boxes = tta.tiles(size, window, overlap)
    starts = [b[0] for b in boxes]
    most = 0
    for start in range(0, len(boxes), batch_size):
        lo = starts[start]  # rows above the batch's first window are finished before it runs
        hi = boxes[min(start + batch_size, len(boxes)) - 1][1]  # window bottoms never decrease
        most = max(most, hi - lo)
    return most
