"""Export-friendly stand-ins for the few inference shortcuts that depend on the input size.

The network's fast paths branch on sizes in Python (which padding slots exist, how many
windows one attention step takes, which deformable-attention kernel runs), which an exporter
would freeze at the example's size. Inside :func:`traceable`, the same functions run in a
branch-free form with the same arithmetic, so one graph serves every (multiple-of-32) size:

- Swin's window layout zeroes its padding slots with a mask instead of a ``nonzero`` list;
- window attention runs all windows in one step instead of size-dependent chunks;
- deformable attention runs its reference ``grid_sample`` path (ONNX ``GridSample``);
- the transformer decoder skips auxiliary mask logits (only the final prediction leaves), and
  its attention runs nn.MultiheadAttention's arithmetic batch-first (the exporter would fix
  the batch of its sequence-first linear layers to more than one).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import pixel_decoder, transformer_decoder
from ..backbone import swin


def _rolled(i: Tensor, n: int) -> Tensor:
    """i mod n for i in [-n, 2n)."""
    return i - n * (i >= n).long() + n * (i < 0).long()


class MaskedWindowLayout(swin.WindowLayout):
    """:class:`~mask2former.backbone.swin.WindowLayout` without data-dependent shapes."""

    def __init__(self, h: int, w: int, ws: int, shift: int, device: torch.device):
        hp, wp = swin.padded_to_windows(h, ws), swin.padded_to_windows(w, ws)
        # Padded-map row/column at each rolled one: (i + shift) mod n, written without a
        # modulo by a symbolic size (which ONNX conversion does not take).
        rows, cols = (_rolled(torch.arange(n, device=device) + shift, n) for n in (hp, wp))
        r = swin.window_partition(rows[:, None].expand(hp, wp)[None, :, :, None], ws).flatten()
        cc = swin.window_partition(cols[None, :].expand(hp, wp)[None, :, :, None], ws).flatten()
        inside = (r < h) & (cc < w)
        self.gather = torch.where(inside, r * w + cc, 0)
        self.inside = inside.view(1, -1, 1)  # (1, window slots, 1)
        # Window slot of each token in closed form (slicing a padded map would make the
        # exporter assume whether padding exists).
        tr, tc = (_rolled(torch.arange(n, device=device) - shift, m) for n, m in ((h, hp), (w, wp)))
        window = (tr[:, None] // ws) * (wp // ws) + tc[None, :] // ws
        self.scatter = (window * ws * ws + (tr[:, None] % ws) * ws + tc[None, :] % ws).flatten()

    def to_windows(self, x: Tensor) -> Tensor:
        y = x.index_select(1, self.gather)
        return torch.where(self.inside, y, torch.zeros((), dtype=y.dtype, device=y.device))


def region_window_mask(hp: int, wp: int, ws: int, shift: int, device: torch.device) -> Tensor:
    """:func:`~mask2former.backbone.swin.shifted_window_mask` with the three regions of each
    axis found by comparison instead of slicing (no assumption on whether a region is empty)."""
    def regions(n: int) -> Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - ws).long() + (i >= n - shift).long()

    region = (regions(hp)[:, None] * 3 + regions(wp)[None, :]).float().view(1, hp, wp, 1)
    ids = swin.window_partition(region, ws).squeeze(-1)  # (nW, ws²)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _window_attention(self: swin.WindowAttention, x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """All windows in one step; x: (B*nW, N, C), mask: (nW, N, N) repeated per image."""
    n = x.shape[1]
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
    bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        mask = mask.repeat(x.shape[0] // mask.shape[0], 1, 1)
    return self._attend(x, bias, mask)


def _level_maps(value: Tensor, shapes: list[tuple[int, int]]) -> list[Tensor]:
    """(N, S, M, D) -> per level (N*M, D, H_l, W_l), through one contiguous copy (the
    exporter cannot tell a view from a copy on symbolic strides)."""
    n, _, m, d = value.shape
    maps, start = [], 0
    for h, w in shapes:
        maps.append(value[:, start:start + h * w].permute(0, 2, 3, 1).contiguous().view(n * m, d, h, w))
        start += h * w
    return maps


def grid_sample_attention(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """:func:`~mask2former.pixel_decoder.deformable_attention_reference`, the same operations
    on per-level maps built by :func:`_level_maps`. Shapes as there; returns (N, Lq, M*D)."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    grids = 2 * locations - 1
    sampled = [F.grid_sample(v, grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1), mode="bilinear",
                             padding_mode="zeros", align_corners=False)
               for lvl, v in enumerate(_level_maps(value, shapes))]
    weights = weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * p)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


def _level_sizes(shapes: list[tuple[int, int]], like: Tensor) -> Tensor:
    """(L, 2) (W, H) of each level, built from the (symbolic) sizes without freezing them."""
    return torch.stack([torch.stack([like.new_full((), w), like.new_full((), h)]) for h, w in shapes])


def _deformable_attention(self: pixel_decoder.MSDeformAttn, query: Tensor, reference: Tensor, value: Tensor,
                          shapes: list[tuple[int, int]]) -> Tensor:
    """MSDeformAttn's reference path (query (N, Lq, C), reference (N, Lq, L, 2), value (N, S, C))."""
    n, lq, c = query.shape
    m, lv, p = self.num_heads, self.num_levels, self.num_points
    v = self.value_proj(value).view(n, value.shape[1], m, c // m)
    offsets = self.sampling_offsets(query).view(n, lq, m, lv, p, 2)
    weights = F.softmax(self.attention_weights(query).view(n, lq, m, lv * p), -1).view(n, lq, m, lv, p)
    normaliser = _level_sizes(shapes, query)
    locations = reference[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
    return self.output_proj(grid_sample_attention(v, shapes, locations, weights))


def pixel_centres(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
    """:func:`~mask2former.pixel_decoder.reference_points` from ``arange`` (linspace would
    freeze its length): ``linspace(0.5, n - 0.5, n)`` is exactly ``arange(n) + 0.5``."""
    pts = []
    for h, w in shapes:
        ys = torch.arange(h, dtype=torch.float32, device=device) + 0.5
        xs = torch.arange(w, dtype=torch.float32, device=device) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack((grid_x.reshape(-1) / w, grid_y.reshape(-1) / h), -1))
    return torch.cat(pts, 0)[None, :, None].to(dtype)


def _attention(attn: torch.nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
    """nn.MultiheadAttention's arithmetic on batch-first contiguous tensors: the exporter
    specialises a (L, B, C) linear to B > 1. q: (Lq, B, C); k, v: (Lk, B, C); mask: (B*heads,
    Lq, Lk) bool, True = may not attend. Returns (Lq, B, C)."""
    lq, b, c = q.shape
    h = attn.num_heads
    d = c // h

    def heads(x: Tensor, i: int) -> Tensor:
        x = transformer_decoder.in_projection(attn, x.transpose(0, 1).contiguous(), i)
        return x.view(b, -1, h, d).transpose(1, 2).reshape(b * h, -1, d)

    scores = (heads(q, 0) * d ** -0.5) @ heads(k, 1).transpose(1, 2)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    out = (scores.softmax(-1) @ heads(v, 2)).view(b, h, lq, d).transpose(1, 2).reshape(b, lq, c)
    return attn.out_proj(out).transpose(0, 1)


def _cross_attention(self: transformer_decoder.CrossAttentionLayer, tgt: Tensor, memory: Tensor,
                     mask: Optional[Tensor], pos: Tensor, query_pos: Tensor) -> Tensor:
    q = self.norm(tgt) if self.pre_norm else tgt
    out = tgt + self.dropout(_attention(self.multihead_attn, q + query_pos, memory + pos, memory, mask))
    return out if self.pre_norm else self.norm(out)


def _self_attention(self: transformer_decoder.SelfAttentionLayer, tgt: Tensor, query_pos: Tensor,
                    weights: Optional[list[Tensor]] = None) -> Tensor:
    x = self.norm(tgt) if self.pre_norm else tgt
    out = tgt + self.dropout(_attention(self.self_attn, x + query_pos, x + query_pos, x, None))
    return out if self.pre_norm else self.norm(out)


@contextlib.contextmanager
def traceable(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, ``model`` (and every model of its kind) runs its export-friendly form."""
    from ..transformer_decoder import MultiScaleMaskedTransformerDecoder

    layers = (transformer_decoder.CrossAttentionLayer, transformer_decoder.SelfAttentionLayer)
    saved = (swin.WindowLayout, swin.shifted_window_mask, swin.WindowAttention.forward,
             pixel_decoder.MSDeformAttn.forward, pixel_decoder.reference_points) + tuple(c.forward for c in layers)
    switches = []
    for module in model.modules():
        if isinstance(module, MultiScaleMaskedTransformerDecoder):
            switches.append((module, "auxiliary_masks", False))
        if hasattr(type(module), "inexact"):  # the export is of the exact form
            switches.append((module, "inexact", False))
    values = [(module, name, getattr(module, name)) for module, name, _ in switches]
    swin.WindowLayout, swin.shifted_window_mask = MaskedWindowLayout, region_window_mask
    swin.WindowAttention.forward = _window_attention
    pixel_decoder.MSDeformAttn.forward = _deformable_attention
    pixel_decoder.reference_points = pixel_centres
    layers[0].forward, layers[1].forward = _cross_attention, _self_attention
    for module, name, value in switches:
        setattr(module, name, value)
    try:
        yield model
    finally:
        (swin.WindowLayout, swin.shifted_window_mask, swin.WindowAttention.forward,
         pixel_decoder.MSDeformAttn.forward, pixel_decoder.reference_points) = saved[:5]
        layers[0].forward, layers[1].forward = saved[5:]
        for module, name, value in values:
            setattr(module, name, value)
