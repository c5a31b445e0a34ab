"""Our network against transformers' Mask2Former (which equals the original) on the same weights.

The network computes what the original computes, op for op (FrozenBN through F.batch_norm at
inference, sequence-first nn.MultiheadAttention with per-head boolean masks, the FPN resizing
the encoder's strided memory), so every prediction is compared for bit equality."""
from __future__ import annotations

import pytest
import torch

from hf_models import SMALL_HEAD, SMALL_SWIN, SWIN_L, hf_forward, hf_model, save_hf
from mask2former import Mask2FormerForUniversalSegmentation


def assert_same_predictions(ours, ref, atol: float = 0.0) -> None:
    pairs = [(ours.class_queries_logits, ref.class_queries_logits),
             (ours.masks_queries_logits, ref.masks_queries_logits)]
    assert len(ours.auxiliary_logits) == len(ref.auxiliary_logits)
    for a, b in zip(ours.auxiliary_logits, ref.auxiliary_logits):
        pairs += [(a["class_queries_logits"], b["class_queries_logits"]),
                  (a["masks_queries_logits"], b["masks_queries_logits"])]
    for i, (a, b) in enumerate(pairs):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        diff = (a - b).abs().max().item()
        assert diff <= atol, f"prediction {i // 2} {'class' if i % 2 == 0 else 'mask'} logits differ by {diff}"
    # The comparison only means something if the masks (and so the attention masks) are non-trivial.
    positive = (ref.masks_queries_logits > 0).float().mean().item()
    assert 0.02 < positive < 0.98, positive


def padded_pair(sizes, pad_to, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(sizes), 3, *pad_to)
    mask = torch.zeros(len(sizes), *pad_to, dtype=torch.long)
    for i, (h, w) in enumerate(sizes):
        x[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        mask[i, :h, :w] = 1
    return x, mask


RESNET50 = dict(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64)


def randomise_batch_norm(model, seed: int = 3) -> None:
    """Non-trivial frozen statistics, so that how batch norm is computed shows in the bits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("backbone,kwargs,size", [
    ("swin", SMALL_SWIN, (256, 288)),
    ("swin", dict(SMALL_SWIN, window_size=5, depths=[1, 3, 2, 1]), (230, 301)),  # sizes the window does not divide
    ("resnet", RESNET50, (224, 256)),
])
def test_single_image(tmp_path, backbone, kwargs, size):
    ref_model = hf_model(backbone, kwargs, **SMALL_HEAD)
    randomise_batch_norm(ref_model)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(save_hf(ref_model, tmp_path))
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = ours(x)
    assert_same_predictions(out, hf_forward(ref_model, x))


@pytest.mark.parametrize("backbone,kwargs", [("swin", SMALL_SWIN), ("resnet", RESNET50)])
def test_padded_batch_of_odd_sizes(tmp_path, backbone, kwargs):
    ref_model = hf_model(backbone, kwargs, **SMALL_HEAD)
    randomise_batch_norm(ref_model)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(save_hf(ref_model, tmp_path))
    x, mask = padded_pair([(261, 297), (283, 259)], (288, 320))
    with torch.no_grad():
        out = ours(pixel_values=x, pixel_mask=mask)
    assert_same_predictions(out, hf_forward(ref_model, x, mask))
    assert torch.equal(out.pixel_mask, mask)


def test_inference_without_auxiliary_masks_is_exact(tmp_path):
    """Dropping earlier mask logits (what Segmenter does) changes no bit of the final ones."""
    ref_model = hf_model("swin", SMALL_SWIN, **SMALL_HEAD)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(save_hf(ref_model, tmp_path))
    x, mask = padded_pair([(261, 297), (283, 259)], (288, 320))
    ours.transformer_decoder.auxiliary_masks = False
    with torch.no_grad():
        out = ours(pixel_values=x, pixel_mask=mask)
    ref = hf_forward(ref_model, x, mask)
    assert all(a["masks_queries_logits"] is None for a in out.auxiliary_logits)
    assert torch.equal(out.masks_queries_logits, ref.masks_queries_logits)
    assert torch.equal(out.class_queries_logits, ref.class_queries_logits)


def test_default_decoder_size(tmp_path):
    """Full-width head (256 dims, 100 queries, 10 predictions) on a small Swin."""
    ref_model = hf_model("swin", SMALL_SWIN, num_labels=19)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(save_hf(ref_model, tmp_path))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out = ours(x)
    assert out.class_queries_logits.shape == (1, 100, 20)
    assert len(out.auxiliary_logits) == 9
    assert_same_predictions(out, hf_forward(ref_model, x))


@pytest.mark.slow
def test_swin_large_cityscapes_architecture(tmp_path):
    """The card's checkpoint architecture: Swin-L, window 12, 19 classes, 100 queries, on a
    padded pair. Same ops as the original, so the same bits on any thread count."""
    ref_model = hf_model("swin", SWIN_L, num_labels=19)
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(save_hf(ref_model, tmp_path))
    x, mask = padded_pair([(416, 448), (401, 430)], (416, 448))
    with torch.no_grad():
        out = ours(pixel_values=x, pixel_mask=mask)
    assert_same_predictions(out, hf_forward(ref_model, x, mask))
