"""Refuse an image that cannot fit in memory before running it, with one line that says what
to do, instead of letting the process be OOM-killed half-way through a dataset.

The estimate is deliberately rough (an upper bound of the big tensors, not a measurement):

* forward at the network's input size (h, w), per image of the batch: the stride-4 maps
  dominate, float32 each: the backbone's first stage (~8 live copies of ``embed_dim``
  channels through window attention), the pixel decoder's ~4 of ``feature_size`` channels,
  and the queries' mask logits (``num_queries`` channels);
* the results at the image's size (H, W): the RGB image, the int64 label map, the overlay,
  and post-processing's class maps (at most ``4 * DEFAULT_MAX_BYTES``, see segmenter);
* sliding windows run the forward on one window (``batch_size`` of them) and keep float32
  score sums of a band of rows only (``window_stream``: C x band rows x w, held about twice
  while the band grows); when the network input is resized, the (C, h, w) average at the
  input size and one block of classes at the image's size besides.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..postprocess import DEFAULT_MAX_BYTES
from ..segmenter import Segmenter


def _forward_bytes(seg: Segmenter, h: int, w: int, batch: int) -> int:
    cfg = seg.model.config
    embed = int(getattr(cfg.backbone_config, "embed_dim", 128) or 128)
    channels = cfg.num_queries + 4 * cfg.feature_size + 8 * embed
    return 4 * batch * channels * (-(-h // 4)) * (-(-w // 4))


def estimate_bytes(seg: Segmenter, height: int, width: int) -> int:
    """Rough peak memory of segmenting one (height, width) image with ``seg``'s settings."""
    h, w = seg.processed_size(height, width)
    images = image_bytes(height, width)
    results = images + 4 * DEFAULT_MAX_BYTES
    window = seg.sliding_window
    if seg.tta:  # (C, H, W) score sums of the views at the image's size
        scale = max(seg.tta_scales)
        h, w = int(h * scale), int(w * scale)
        if window is not None:
            h, w = min(h, window[0]), min(w, window[1])
        return _forward_bytes(seg, h, w, 1) + 8 * len(seg.info.id2label) * height * width + results
    if window is not None:  # streamed: no full-size class maps
        return _forward_bytes(seg, min(h, window[0]), min(w, window[1]), seg.batch_size) \
            + sliding_window_bytes(seg, height, width) + images
    return _forward_bytes(seg, h, w, seg.batch_size) + results


def image_bytes(height: int, width: int) -> int:
    """The image's own maps whatever the windows: RGB, labels, overlay, what the labels give."""
    return height * width * (3 + 8 + 3 + 8)


def sliding_window_bytes(seg: Segmenter, height: int, width: int) -> int:
    """Score memory of streamed sliding windows (see ``mask2former.window_stream``)."""
    from ..window_stream import band_rows

    h, w = seg.processed_size(height, width)
    classes = len(seg.info.id2label)
    band = 2 * (classes + 1) * 4 * band_rows((h, w), seg.sliding_window, seg.window_overlap, seg.batch_size) * w
    if (h, w) == (height, width):
        return band
    # resized: the (C, h, w) average, the resized 8-bit input, a block of classes at the image's size
    return band + 4 * classes * h * w + 3 * h * w + min(4 * classes * height * width, DEFAULT_MAX_BYTES)


def available_bytes(device: torch.device) -> Optional[int]:
    """Free memory of the device (GPU), or available RAM within any cgroup limit (CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)  # what PyTorch's allocator holds unused is free to this process
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limit = f.read().strip()
            if limit.isdigit() and int(limit) < (avail or 1 << 62):
                used_path = os.path.join(os.path.dirname(path), "memory.current" if path.endswith("max")
                                         else "memory.usage_in_bytes")
                with open(used_path) as f:
                    avail = min(avail or 1 << 62, int(limit) - int(f.read().strip()))
        except (OSError, ValueError):
            continue
    return avail


class MemoryCheck:
    """``check(path, height, width)`` raises ValueError when the estimate exceeds what is
    available (``limit_bytes`` overrides the measured amount, for tests and shared hosts)."""

    def __init__(self, seg: Segmenter, limit_bytes: Optional[int] = None):
        self.seg = seg
        self.limit = limit_bytes

    def __call__(self, path: str, height: int, width: int) -> None:
        need = estimate_bytes(self.seg, height, width)
        have = self.limit if self.limit is not None else available_bytes(self.seg.device)
        if have is None or need <= have:
            return
        h, w = self.seg.processed_size(height, width)
        if self.seg.sliding_window is None:
            hint = "use --sliding-window H W (semantic task) or --resize original"
        elif image_bytes(height, width) > have:  # no window size helps then
            hint = "the image and its label map alone do not fit; use --resize original"
        else:
            hint = "use a smaller --sliding-window or --batch-size"
        raise ValueError(f"{path}: too large for the memory available ({width}x{height} image, network input "
                         f"{w}x{h}: needs about {need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available); {hint}")
