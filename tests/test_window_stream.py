"""Streamed sliding windows (mask2former.window_stream): labels bit-identical to the
full-accumulator reference (tta.sliding_window_labels), and memory bounded by a band of
windows, not by the image (peak RSS of a subprocess, 150-class model)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from test_segment_scale import DEMO, ENV, street


def demo_segmenter(resize: bool, window, overlap: float, batch_size: int):
    from mask2former.segmenter import Segmenter

    seg = Segmenter(DEMO, task="semantic", resize="config", sliding_window=window, window_overlap=overlap,
                    batch_size=batch_size)
    seg.processor.do_resize = resize  # False: the network input is the image itself (the huge-image case)
    return seg


@pytest.mark.parametrize("size, window, overlap, batch_size, resize", [
    ((150, 230), (64, 64), 1 / 3, 1, False),   # sizes no multiple of the stride
    ((97, 301), (64, 96), 0.5, 3, False),      # a batch spans two rows of windows
    ((200, 130), (128, 64), 0.0, 2, False),
    ((60, 50), (64, 64), 1 / 3, 1, False),     # one window covers it all
    ((150, 420), (128, 128), 1 / 3, 1, True),  # resized to 256 x 736 and back
    ((90, 130), (100, 96), 0.25, 2, True),
])
def test_streamed_labels_equal_full_accumulator(one_thread, size, window, overlap, batch_size, resize):
    from mask2former import tta
    from mask2former.window_stream import streamed_window_labels

    seg = demo_segmenter(resize, window, overlap, batch_size)
    rgb = street(*size, seed=size[0])
    want = tta.sliding_window_labels(seg, rgb, window, overlap)
    assert len(np.unique(want)) > 2
    assert np.array_equal(streamed_window_labels(seg, rgb, window, overlap), want)
    assert np.array_equal(seg(rgb).labels, want)  # the Segmenter streams


@pytest.mark.parametrize("resize", [False, True])
def test_window_pixels_equal_the_whole_image_cropped(resize):
    import torch

    from mask2former import tta
    from mask2former.window_stream import window_pixels

    seg = demo_segmenter(resize, (64, 64), 1 / 3, 1)
    rgb = street(97, 133, 3)
    size = seg.processed_size(97, 133)
    whole = tta.image_tensor(seg, rgb, size)
    small = tta.resized_rgb(seg, rgb, size)
    for y0, y1, x0, x1 in tta.tiles(size, (64, 64), 1 / 3):
        assert torch.equal(window_pixels(seg, small, (y0, y1, x0, x1)), whole[:, y0:y1, x0:x1])


def test_band_rows_bound_the_band():
    """The band never holds more rows than band_rows says (the memory estimate's figure),
    which is about a window, not the image."""
    from mask2former import window_stream
    from mask2former.window_stream import ScoreBand, band_rows

    seen = []
    add = ScoreBand.add

    def spy(self, *args):
        add(self, *args)
        seen.append(self.count.shape[0])

    seg = demo_segmenter(False, (64, 64), 1 / 3, 2)
    ScoreBand.add = spy
    try:
        window_stream.streamed_window_labels(seg, street(300, 100, 1), (64, 64), 1 / 3)
    finally:
        ScoreBand.add = add
    assert max(seen) == band_rows((300, 100), (64, 64), 1 / 3, 2) <= 64 + 42


MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np
from mask2former.inference.memory import estimate_bytes
from mask2former.segmenter import Segmenter

folder, height, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seg = Segmenter(folder, task="semantic", resize="config", sliding_window=(128, 128), window_overlap=0.0)
seg.processor.do_resize = False
rng = np.random.default_rng(0)
seg(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))  # warm up: allocator pools, lazy imports
rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
labels = seg(rgb).labels
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": after - before, "estimate": estimate_bytes(seg, height, width),
                  "classes": len(seg.info.id2label), "shape": list(labels.shape)}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB")
def test_memory_bounded_by_window_not_image(tmp_path):
    """A 2000 x 500 image, 150 classes, 128 x 128 windows: the full score map alone would be
    600 MB (the full-accumulator reference peaked at 556 MB here); streamed, the run's extra peak
    stays within the estimate (band + image + labels, ~100 MB; measured 76 MB)."""
    from hf_models import SMALL_HEAD, hf_model, save_hf

    folder = save_hf(hf_model(num_labels=150, **{**SMALL_HEAD, "num_queries": 8}), tmp_path / "m150")
    height, width = 2000, 500
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, folder, str(height), str(width)],
                         capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    full_scores = 4 * got["classes"] * height * width
    assert got["shape"] == [height, width]
    assert got["estimate"] < full_scores / 4  # the estimate is the window's, not the image's
    assert got["peak"] <= 1.25 * got["estimate"], got  # RSS: allocator slack; the full map alone is 4x


def test_memory_check_counts_the_band():
    """A 6000 x 8000 image tiled at its own size (no resize): the estimate is the band, the
    image and its labels (~1.3 GiB), so 2 GiB suffice, where (C, H, W) score sums and counts
    alone took 2.9 GiB; a smaller budget is still refused, naming the option."""
    from mask2former.inference.memory import MemoryCheck, estimate_bytes

    seg = demo_segmenter(False, (512, 512), 1 / 3, 1)
    seg.processor.size = {"shortest_edge": 6000, "longest_edge": 8000}
    classes = len(seg.info.id2label)
    assert estimate_bytes(seg, 6000, 8000) < 2 * 2**30 < 8 * classes * 6000 * 8000
    MemoryCheck(seg, limit_bytes=2 * 2**30)("aerial.tif", 6000, 8000)  # fits: no error
    with pytest.raises(ValueError, match=r"aerial\.tif: too large .*smaller --sliding-window"):
        MemoryCheck(seg, limit_bytes=2**30)("aerial.tif", 6000, 8000)
    with pytest.raises(ValueError, match=r"label map alone do not fit; use --resize original"):
        MemoryCheck(seg, limit_bytes=2**30)("aerial.tif", 60000, 80000)
