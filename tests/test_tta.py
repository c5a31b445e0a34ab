"""Test-time augmentation and sliding-window inference (mask2former.tta) against scores
computed here independently: plain padding + forward + einsum + bilinear resizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mask2former import Mask2FormerForUniversalSegmentation, tta
from mask2former.model import Mask2FormerOutput
from mask2former.processor import Mask2FormerImageProcessor
from mask2former.segmenter import Segmenter
from mask2former.train.model_init import architecture_config

NAMES = {i: f"c{i}" for i in range(5)}


def _config():
    return architecture_config("tiny", NAMES, {"num_queries": 8, "decoder_layers": 3})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Mask2FormerForUniversalSegmentation(_config()).eval()
    with torch.no_grad():  # sharper, more varied class scores than the random init gives
        m.transformer_decoder.class_embed.weight.mul_(30)
    return m


class MirrorModel(Mask2FormerForUniversalSegmentation):
    """A network that commutes with horizontal flips: per-pixel colour projections of 4x4
    average-pooled pixels as mask logits, fixed class logits."""

    def __init__(self) -> None:
        super().__init__(_config())
        g = torch.Generator().manual_seed(1)
        self.proj = torch.randn(8, 3, generator=g) * 3
        self.cls = torch.randn(8, len(NAMES) + 1, generator=g) * 3

    def forward(self, pixel_values, pixel_mask=None, **unused):
        pooled = F.avg_pool2d(pixel_values, 4)
        masks = torch.einsum("qc,bchw->bqhw", self.proj, pooled)
        return Mask2FormerOutput(self.cls.expand(pixel_values.shape[0], -1, -1), masks, [], pixel_mask)


def segmenter(model, test_size=(64, 128), **kw) -> Segmenter:
    seg = Segmenter(model, task="semantic", device="cpu", **kw)
    seg.info.test_size = test_size  # the original's resize, at a size a CPU test affords
    return seg


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reference_scores(model, pixels: torch.Tensor, out_size) -> torch.Tensor:
    """(C, *out_size) semantic scores of normalised (3, h, w) pixels, the plain way."""
    h, w = pixels.shape[-2:]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    with torch.no_grad():
        out = model(pixel_values=F.pad(pixels, (0, pw - w, 0, ph - h))[None])
    probs = out.class_queries_logits[0].softmax(-1)[:, :-1]
    masks = F.interpolate(out.masks_queries_logits, size=(ph, pw), mode="bilinear", align_corners=False)[0]
    scores = torch.einsum("qc,qhw->chw", probs, masks.sigmoid())[:, :h, :w]
    return F.interpolate(scores[None], size=tuple(out_size), mode="bilinear", align_corners=False)[0]


def pixels_at(rgb: np.ndarray, size) -> torch.Tensor:
    if tuple(size) != rgb.shape[:2]:
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return Mask2FormerImageProcessor()([rgb], do_resize=False)["pixel_values"][0]


def test_one_view_is_plain_inference(model):
    rgb = image(70, 100)
    for seg in (segmenter(model), segmenter(model, resize="config",
                                            processor=Mask2FormerImageProcessor(size={"shortest_edge": 48}))):
        plain = seg(rgb).labels
        scores = tta.view_scores(seg, rgb)
        assert scores.shape == (len(NAMES), 70, 100)
        assert np.array_equal(tta.labels_from_scores(scores), plain)
    ref = reference_scores(model, pixels_at(rgb, (64, 91)), (70, 100))
    assert torch.allclose(tta.view_scores(segmenter(model), rgb), ref, atol=1e-5)


def test_flip_tta_is_mean_of_plain_and_mirrored_plain(model):
    rgb = image(70, 100, seed=1)
    seg = segmenter(model)
    got = tta.tta_scores(seg, rgb, scales=[1.0], flip=True)
    size = (64, 91)
    plain = reference_scores(model, pixels_at(rgb, size), (70, 100))
    mirrored = reference_scores(model, pixels_at(np.ascontiguousarray(rgb[:, ::-1]), size), (70, 100)).flip(-1)
    assert torch.allclose(got, (plain + mirrored) / 2, atol=1e-5)
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # the flip really changed something
    # through the Segmenter option
    labels = segmenter(model, tta=True, tta_scales=[1.0])(rgb).labels
    assert np.array_equal(labels, tta.labels_from_scores(got))


def test_multiscale_sizes_and_mean(model):
    rgb = image(60, 90, seed=2)
    seg = segmenter(model)
    # base test size (64, 128); one long-side cap for all scales: 128 * 1.5
    assert tta.scaled_size(seg, 60, 90, 0.5, 192) == (32, 48)
    assert tta.scaled_size(seg, 60, 90, 1.0, 192) == (64, 96)
    assert tta.scaled_size(seg, 60, 90, 1.5, 192) == (96, 144)
    assert tta.scaled_size(seg, 30, 200, 1.0, 192) == (29, 192)  # the cap binds
    got = tta.tta_scores(seg, rgb, scales=[0.5, 1.0, 1.5], flip=False)
    want = sum(reference_scores(model, pixels_at(rgb, s), (60, 90)) for s in [(32, 48), (64, 96), (96, 144)]) / 3
    assert torch.allclose(got, want, atol=1e-5)


def test_flip_tta_on_a_mirror_symmetric_network_and_image_is_plain():
    seg = segmenter(MirrorModel().eval())
    half = image(64, 48, seed=3)
    rgb = np.concatenate([half, half[:, ::-1]], axis=1)  # 64 x 96: no resize, no padding
    plain = tta.view_scores(seg, rgb)
    flipped = tta.tta_scores(seg, rgb, scales=[1.0], flip=True)
    assert torch.allclose(flipped, plain, atol=1e-6)
    assert np.array_equal(tta.labels_from_scores(flipped), seg(rgb).labels)
    assert len(np.unique(seg(rgb).labels)) > 1


def test_window_positions():
    assert tta.window_starts(64, 64, 32) == [0]
    assert tta.window_starts(50, 64, 32) == [0]
    assert tta.window_starts(65, 64, 64) == [0, 1]
    assert tta.window_starts(100, 64, 32) == [0, 32, 36]
    assert tta.window_starts(160, 64, 42) == [0, 42, 84, 96]
    assert tta.window_stride((64, 96), 1 / 3) == (42, 64)
    assert tta.tiles((40, 100), (64, 64), 0.5) == [(0, 40, 0, 64), (0, 40, 32, 96), (0, 40, 36, 100)]


def test_sliding_window_that_fits_is_plain_inference(model):
    rgb = image(70, 100, seed=4)
    seg = segmenter(model)  # processed size 64 x 91: fits in one 64 x 96 window
    assert torch.equal(tta.sliding_window_scores(seg, rgb, (64, 96)), tta.view_scores(seg, rgb))
    plain = seg(rgb).labels
    assert np.array_equal(segmenter(model, sliding_window=(64, 96))(rgb).labels, plain)
    assert np.array_equal(segmenter(model, sliding_window=(200, 200))(rgb).labels, plain)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_sliding_window_tiles(model, batch_size):
    rgb = image(70, 150, seed=5)
    seg = segmenter(model, (64, 256), batch_size=batch_size)
    h, w = seg.processed_size(70, 150)
    assert (h, w) == (64, 137)
    pixels = pixels_at(rgb, (h, w))
    # 64 x 64 windows, overlap 1/2: stride 32 -> columns 0, 32, 64, 73; one row
    acc = torch.zeros(len(NAMES), h, w)
    count = torch.zeros(h, w)
    for x0 in (0, 32, 64, 73):
        acc[:, :, x0:x0 + 64] += reference_scores(model, pixels[:, :, x0:x0 + 64], (64, 64))
        count[:, x0:x0 + 64] += 1
    want = F.interpolate((acc / count)[None], size=(70, 150), mode="bilinear", align_corners=False)[0]
    got = tta.sliding_window_scores(seg, rgb, (64, 64), 0.5)
    assert torch.allclose(got, want, atol=1e-5)
    # mirrored view: tiles of the mirrored image, result mirrored back
    flipped = tta.sliding_window_scores(seg, rgb, (64, 64), 0.5, flip=True)
    want_f = tta.sliding_window_scores(seg, np.ascontiguousarray(rgb[:, ::-1]), (64, 64), 0.5).flip(-1)
    assert torch.allclose(flipped, want_f, atol=1e-6)
    # inside TTA: every view tiled, then averaged
    both = tta.tta_scores(seg, rgb, scales=[1.0], flip=True, window=(64, 64), overlap=0.5)
    assert torch.allclose(both, (got + flipped) / 2, atol=1e-6)
    seg_opts = segmenter(model, (64, 256), tta=True, tta_scales=[1.0], sliding_window=(64, 64), window_overlap=0.5)
    assert np.array_equal(seg_opts(rgb).labels, tta.labels_from_scores(both))


def test_class_scores_in_chunks_equal_all_at_once():
    from mask2former.postprocess import MaskResizer

    g = torch.Generator().manual_seed(0)
    cls, masks = torch.randn(20, 7, generator=g) * 3, torch.randn(20, 16, 24, generator=g) * 4
    whole = tta.class_scores(cls, MaskResizer(masks, (64, 96), (60, 90), (50, 80)))
    want = torch.einsum("qc,qhw->chw", cls.softmax(-1)[:, :-1],
                        F.interpolate(masks[None], size=(64, 96), mode="bilinear", align_corners=False)[0].sigmoid())
    want = F.interpolate(want[None, :, :60, :90], size=(50, 80), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(whole, want, atol=1e-6)
    budget = 2 * 4 * (64 * 96 + 50 * 80)  # 2 classes per chunk, 8 queries (the minimum) per chunk
    small = MaskResizer(masks, (64, 96), (60, 90), (50, 80), max_bytes=budget)
    assert small.chunk_size() == 8
    assert torch.allclose(tta.class_scores(cls, small, max_bytes=budget), whole, atol=1e-6)


def test_options_are_checked(model):
    with pytest.raises(ValueError, match="semantic task only"):
        Segmenter(model, task="panoptic", device="cpu", tta=True)
    with pytest.raises(ValueError, match="semantic task only"):
        Segmenter(model, task="instance", device="cpu", sliding_window=(64, 64))
    with pytest.raises(ValueError, match="scales"):
        Segmenter(model, task="semantic", device="cpu", tta=True, tta_scales=[0.0])
    with pytest.raises(ValueError, match="overlap"):
        Segmenter(model, task="semantic", device="cpu", sliding_window=(64, 64), window_overlap=1.0)
