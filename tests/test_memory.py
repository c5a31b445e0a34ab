"""Memory: the checkpoint is resident once after loading, and what was changed to lower the
inference peak computes the same bits as the reference it replaces."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hf_models import hf_model, save_hf

SWIN_T = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7)

MEASURE = """
import json, sys
import torch, mask2former

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

before = status("VmRSS")
model = mask2former.Mask2FormerForUniversalSegmentation.from_pretrained(sys.argv[1])
print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS")}))
"""


@pytest.fixture(scope="module")
def swin_t_folder(tmp_path_factory):
    """A Swin-T-sized checkpoint (190 MB of weights), so that the weights dwarf the noise."""
    return save_hf(hf_model("swin", SWIN_T, num_labels=19), tmp_path_factory.mktemp("swin-t"))


def test_loading_holds_the_checkpoint_once(swin_t_folder):
    """from_pretrained in a fresh process: its peak resident growth stays well under twice the
    weights (loading the file's tensors and then copying them into a freshly initialised
    model, as before, peaked at 2.1x), and the parameters are the file's tensors."""
    weights = os.path.join(swin_t_folder, "model.safetensors")
    size = os.path.getsize(weights)
    out = subprocess.run([sys.executable, "-c", MEASURE, swin_t_folder], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    growth = rss["peak"] - rss["before"]
    assert growth < 1.35 * size, f"loading peaked {growth / 2**20:.0f} MB above the imports for {size / 2**20:.0f} MB of weights"
    assert rss["after"] - rss["before"] > 0.9 * size  # the weights are really in memory, once

    from safetensors.torch import load_file

    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.checkpoint.hf import hf_state_to_ours

    model = Mask2FormerForUniversalSegmentation.from_pretrained(swin_t_folder)
    expected = hf_state_to_ours(load_file(weights), weights)  # safetensors' own reader, q/k/v fused by cat
    state = model.state_dict()
    assert set(expected) <= set(state)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
        assert state[name].data_ptr() % 64 == 0  # allocated as PyTorch allocates parameters


def test_damaged_safetensors_is_one_clear_error(swin_t_folder, tmp_path):
    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.checkpoint.hf import CheckpointMismatchError

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((open(os.path.join(swin_t_folder, "config.json"), "rb").read()))
    data = open(os.path.join(swin_t_folder, "model.safetensors"), "rb").read()
    for damage in (data[: len(data) // 2], data[:6], b"\xff" * 8 + data[8:200]):
        (bad / "model.safetensors").write_bytes(damage)
        with pytest.raises(CheckpointMismatchError, match="model.safetensors: cannot read the weights"):
            Mask2FormerForUniversalSegmentation.from_pretrained(bad)


@pytest.mark.parametrize("budget", [16 * 2**20, 2**20, 1])
def test_reference_sampling_in_blocks_is_transformers_arithmetic(budget):
    """The pixel decoder's sampling in (image, head) steps and query blocks, at Swin-T's
    512x1024 sizes (the blocks only start past a few thousand queries), against transformers'
    own function: bit for bit."""
    from transformers.models.mask2former.modeling_mask2former import multi_scale_deformable_attention

    from mask2former.pixel_decoder import deformable_attention_reference

    torch.manual_seed(0)
    shapes = [(16, 32), (32, 64), (64, 128)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(1, s, 8, 32)
    loc = torch.rand(1, s, 8, 3, 4, 2) * 1.4 - 0.2
    weights = torch.rand(1, s, 8, 3, 4).softmax(-1)
    with torch.inference_mode():
        expected = multi_scale_deformable_attention(value, shapes, loc, weights)
        assert torch.equal(deformable_attention_reference(value, shapes, loc, weights, budget), expected)


def test_head_masks_are_the_originals():
    """Comparing before the per-head copies gives the original's booleans."""
    from mask2former.transformer_decoder import head_masks

    torch.manual_seed(0)
    logits = torch.randn(2, 12, 40, 56) * 3
    logits[0, 3] = -10  # a query whose mask covers nothing may see everything
    size, heads = (20, 28), 8
    small = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    expected = small.sigmoid().flatten(2).unsqueeze(1).repeat(1, heads, 1, 1).flatten(0, 1) < 0.5
    expected[torch.where(expected.sum(-1) == expected.shape[-1])] = False
    assert torch.equal(head_masks(logits, size, heads), expected)


@pytest.mark.parametrize("step_bytes", [1, 3 * 40 * 96 * 4, 2**40])
@pytest.mark.parametrize("batch", [1, 2])
def test_stepped_attention_is_multihead_attention(step_bytes, batch):
    """The decoder's cross-attention a few heads at a time (one head, three of eight, all at
    once) computes nn.MultiheadAttention's bits, the original's and transformers' arithmetic."""
    from mask2former.transformer_decoder import stepped_attention

    torch.manual_seed(batch)
    attn = torch.nn.MultiheadAttention(64, 8).eval()
    q, k, v = torch.randn(40, batch, 64), torch.randn(96, batch, 64), torch.randn(96, batch, 64)
    blocked = torch.rand(batch * 8, 40, 96) < 0.6
    blocked[3] = False  # a head that may see everything
    with torch.inference_mode():
        expected = attn(q, k, v, attn_mask=blocked)[0]
        assert torch.equal(stepped_attention(attn, q, k, v, blocked, step_bytes), expected)


def test_pixel_decoder_lets_the_backbone_maps_go_only_when_given_them(tmp_path):
    """``release=True`` (what the model does when no hidden states are asked for) drops each
    backbone map from the caller's list once read, with the same outputs; by default the
    list is left as it was."""
    from mask2former import Mask2FormerForUniversalSegmentation

    model = Mask2FormerForUniversalSegmentation.from_pretrained(save_hf(hf_model("swin"), tmp_path)).eval()
    with torch.inference_mode():
        features = model.backbone(torch.randn(1, 3, 96, 128))
        kept = list(features)
        expected = model.pixel_decoder(kept)
        assert all(a is b for a, b in zip(kept, features))
        given = list(features)
        got = model.pixel_decoder(given, release=True)
    assert given == [None] * len(features)
    assert torch.equal(got[0], expected[0]) and all(torch.equal(a, b) for a, b in zip(got[1], expected[1]))


def test_cross_attention_takes_steps_only_in_inference(monkeypatch):
    """CPU inference takes the stepped form; with gradients (training) the layer keeps
    nn.MultiheadAttention itself, whose autograd and dropout the steps do not have."""
    from mask2former import transformer_decoder

    calls = []
    real = transformer_decoder.stepped_attention
    monkeypatch.setattr(transformer_decoder, "stepped_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = transformer_decoder.CrossAttentionLayer(32, 4, 0.0, pre_norm=False).eval()
    tgt, memory = torch.randn(6, 1, 32), torch.randn(20, 1, 32)
    mask = torch.rand(4, 6, 20) < 0.5
    with torch.inference_mode():
        stepped = layer(tgt, memory, mask, torch.zeros_like(memory), torch.zeros_like(tgt))
    assert calls == [1]
    plain = layer(tgt, memory, mask, torch.zeros_like(memory), torch.zeros_like(tgt))
    assert calls == [1] and plain.requires_grad and torch.equal(stepped, plain.detach())


def test_heap_pages_are_released_only_in_cpu_inference(monkeypatch):
    """malloc_trim runs in CPU inference and not under autograd or when turned off."""
    from mask2former import heap

    calls = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    x = torch.zeros(3)
    with torch.no_grad():
        heap.release_free_pages(x)
    assert calls == [0]
    heap.release_free_pages(x)  # autograd on: nothing
    monkeypatch.setenv("MASK2FORMER_HEAP_TRIM", "0")
    with torch.no_grad():
        heap.release_free_pages(x)
    assert calls == [0]


def test_heap_trim_resolves_on_this_libc():
    from mask2former import heap

    trim = heap._malloc_trim()
    assert trim is None or trim(0) in (0, 1)
