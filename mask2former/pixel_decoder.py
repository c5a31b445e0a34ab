"""Multi-scale deformable-attention pixel decoder (``MSDeformAttnPixelDecoder``).

A 6-layer deformable-attention encoder (Zhu et al., Deformable DETR) runs over the stride
8/16/32 backbone features; an FPN step adds the stride-4 feature, from which a 1x1 conv gives
the per-pixel mask features. Deformable attention here is pure PyTorch (bilinear
``grid_sample``, or ``embedding_bag`` on the fast path), so it runs anywhere without a compiled
extension.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Mask2FormerConfig
from . import heap, layers
from .layers import NormConv2d
from .position_encoding import sine_position_encoding


# Bytes of sample temporaries the reference path may hold at once: whole batches at
# 1024x2048 would otherwise hold ~0.5 GB per layer, and small steps are recycled from one step
# to the next instead of growing the heap. It splits (image, head) pairs, then one pair's
# queries in blocks of QUERY_BLOCK multiples. Neither changes a bit: every output element is
# computed by the same operations, and whole blocks keep each element's SIMD lane.
REFERENCE_BUDGET = 16 * 2**20
QUERY_BLOCK = 256


def deformable_attention_reference(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor,
                                   weights: Tensor, budget: int = REFERENCE_BUDGET) -> Tensor:
    """The reference formulation: one ``grid_sample`` per level, then the attention-weighted
    sum over levels and points, in the same operations as transformers' implementation (so
    its results are bit-identical to it, given the same inputs).

    value: (N, S, M, D) with S = sum of H_l*W_l; locations: (N, Lq, M, L, P, 2) normalised
    (x, y) in [0, 1]; weights: (N, Lq, M, L, P), softmaxed over L*P. Returns (N, Lq, M*D).
    Materialises the samples, (N*M, D, Lq, L*P), for as much as ``budget`` allows at a time
    (see REFERENCE_BUDGET): :func:`deformable_attention` is the fast, lean form. Arguments
    the caller passes as temporaries are let go as soon as they are copied.
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    grids = 2 * locations - 1
    del locations
    maps, level_grids, start = [], [], 0
    for lvl, (h, w) in enumerate(shapes):
        maps.append(value[:, start:start + h * w].flatten(2).transpose(1, 2).reshape(n * m, d, h, w))
        level_grids.append(grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1))
        start += h * w
    element_size = value.element_size()
    del value, grids
    weights = weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * p)
    # Per query of one pair: the samples, their stack and the weighted copy. grid_sample runs
    # its pairs in parallel, so a step has at least one pair per thread, and a block of
    # queries as the budget then allows.
    per_query = 3 * d * num_levels * p * element_size
    step = min(n * m, max(budget // (per_query * lq), torch.get_num_threads(), 1))
    block = lq if step * per_query * lq <= budget else \
        max(QUERY_BLOCK, budget // (step * per_query) // QUERY_BLOCK * QUERY_BLOCK)
    parts = []
    for s in range(0, n * m, step):
        blocks = []
        for q0 in range(0, lq, block):
            # Contiguous, as whole grids are: the sampler then walks the points the same way.
            grids_block = [g[s:s + step, q0:q0 + block].contiguous() for g in level_grids]
            sampled = [F.grid_sample(v[s:s + step], g, mode="bilinear", padding_mode="zeros", align_corners=False)
                       for v, g in zip(maps, grids_block)]
            blocks.append((torch.stack(sampled, dim=-2).flatten(-2) * weights[s:s + step, :, q0:q0 + block]).sum(-1))
            del sampled, grids_block
        parts.append(blocks[0] if len(blocks) == 1 else torch.cat(blocks, -1))
    out = (parts[0] if len(parts) == 1 else torch.cat(parts)).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


def padded_value_table(value: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
    """(N, S, C) -> (N, S', C): every level's map framed by one row/column of zeros.

    Bilinear sampling with zero padding then needs no validity test: a corner outside the map
    is clamped onto the frame, whose value is zero, exactly what ``grid_sample`` reads there.
    """
    n, _, c = value.shape
    table = value.new_empty(n, sum((h + 2) * (w + 2) for h, w in shapes), c)
    src = dst = 0
    for h, w in shapes:
        frame = table[:, dst:dst + (h + 2) * (w + 2)].view(n, h + 2, w + 2, c)
        frame[:, 1:h + 1, 1:w + 1] = value[:, src:src + h * w].view(n, h, w, c)
        for edge in (frame[:, 0], frame[:, -1], frame[:, :, 0], frame[:, :, -1]):
            edge.zero_()
        src, dst = src + h * w, dst + (h + 2) * (w + 2)
    return table


class SamplingGeometry:
    """Constants of the sampling columns (one per head, level and point, in that order) over a
    padded value table with one row per (padded token, head)."""

    def __init__(self, shapes: list[tuple[int, int]], m: int, p: int, device: torch.device, dtype: torch.dtype):
        lv = len(shapes)
        starts, acc = [], 0
        for h, w in shapes:
            starts.append(acc)
            acc += (h + 2) * (w + 2)
        self.rows = acc * m  # rows of the table
        # Row numbers are computed in floating point: float32 counts exactly below 2**24.
        self.index_dtype = dtype if self.rows < 2**24 and dtype != torch.float16 else torch.float64

        def per_column(values: list[float]) -> Tensor:  # (M, 1, L*P), broadcast over queries/corners
            return torch.tensor(values, dtype=self.index_dtype, device=device).view(1, lv, 1).expand(m, lv, p) \
                .reshape(m, 1, -1)

        self.size = torch.tensor([[w, h] for h, w in shapes], dtype=dtype, device=device)  # (L, 2)
        # Largest padded x and y of each column, (2, M, 1, L*P): x and y are clamped in one op.
        self.xy_max = torch.stack([per_column([w + 1 for _, w in shapes]), per_column([h + 1 for h, _ in shapes])])
        self.y_stride = per_column([(w + 2) * m for _, w in shapes])  # table rows per padded map row
        heads = torch.arange(m, dtype=self.index_dtype, device=device).view(m, 1, 1)
        self.base = per_column([s * m for s in starts]) + heads  # table row of each column's (0, 0) corner
        self.corners = torch.tensor([0.0, 1.0], dtype=dtype, device=device).view(2, 1)  # floor(x) + 0 and + 1


def pixel_coordinate(reference: Tensor, offset: Tensor, size: Tensor) -> Tensor:
    """Sampling position in pixels: the original's normalised location ``reference + offset /
    size``, then ``grid_sample``'s unnormalisation of ``2 * location - 1``, in the same float
    operations (the same roundings), so positions equal those of the reference implementation."""
    grid = 2 * (reference + offset / size) - 1
    return (grid + 1) * (size / 2) - 0.5


def position_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sampling positions are computed in: float32 for bf16 / fp16 data, whose 8 or
    10 bits would move a point by up to half a pixel at 256 pixels wide; else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _softmax(x: Tensor) -> Tensor:
    """Softmax over the last (short) axis; torch's kernel is slow on rows of a dozen."""
    e = (x - x.detach().amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def deformable_attention(table: Tensor, geom: SamplingGeometry, xy: Tensor, weights: Tensor) -> Tensor:
    """Bilinear samples of a padded value table, weighted and summed per (query, head).

    table: (rows, D), one row per (padded token, head); xy: (Q, 2, M, L*P) sampling positions
    (x, then y) in pixels of each column's level (``grid_sample``'s align_corners=False
    convention: pixel centres are integers); weights: (Q, M, L*P) attention weights. Returns
    (Q, M*D).

    Instead of materialising every sample (as ``grid_sample`` per level does), each
    (query, head) is one bag of 4*L*P table rows with bilinear x attention weights, summed by
    ``embedding_bag``: one pass, no (Q, M, D, L*P) intermediate. x and y go through each
    step together (half the element-wise calls, each on twice the elements).
    """
    q, _, m, k = xy.shape
    # Coordinates of both neighbours along each axis, (Q, 2, M, 2, L*P).
    near = xy.detach().floor().unsqueeze(3) + geom.corners
    # The weight of a neighbour is 1 - its distance (autograd reaches xy and weights here).
    w = 1 - (xy.unsqueeze(3) - near).abs()
    wx, wy = w[:, 0], w[:, 1] * weights.unsqueeze(2)
    # Shifted by the frame; neighbours outside the map are clamped onto the zero frame.
    near = torch.minimum(near.to(geom.index_dtype).add_(1).clamp_(min=0), geom.xy_max)
    xs = near[:, 0] * m
    ys = torch.addcmul(geom.base, near[:, 1], geom.y_stride)
    rows = (ys.unsqueeze(3) + xs.unsqueeze(2)).to(torch.int32 if geom.rows < 2**31 else torch.int64)
    bilinear = wy.unsqueeze(3) * wx.unsqueeze(2)
    out = F.embedding_bag(rows.view(q * m, -1), table, per_sample_weights=bilinear.view(q * m, -1).to(table.dtype),
                          mode="sum")
    return out.view(q, -1)


def by_token_blocks(fn, x: Tensor, rows: int = 2048) -> Tensor:
    """``fn`` (a per-token MLP) over blocks of ``rows`` tokens of x (..., C) when no gradient
    is needed: its wide hidden layer then stays cache-sized instead of being a fresh
    (page-faulted) allocation of all tokens at once. Same result up to float rounding."""
    flat = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() or flat.shape[0] <= rows:
        return fn(x)
    return torch.cat([fn(flat[i:i + rows]) for i in range(0, flat.shape[0], rows)]).view(*x.shape[:-1], -1)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention. Two numerically equivalent paths: the reference one
    (default, and what exact fp32 inference runs; op for op transformers', so bit-identical to
    it), and the fast one: bilinear sampling and weighting in one ``embedding_bag`` over query
    chunks, about 2x faster per layer, on a quiet machine and beside a competing process alike
    (``benchmarks/sampling.py``), and without the (N*M, D, Lq, L*P) sample tensors. The fast
    path runs where :func:`layers.inexact_inference` says: in inference under autocast (the
    bf16 / fp16 modes) and in models marked by :func:`layers.allow_inexact` (the int8 mode).
    Both support autograd. They differ by float rounding (~1e-7 relative), which can flip a
    mask-attention decision whose logit is that close to 0.
    """

    # Queries per step of the fast path: bounds its temporaries (~10 MB at 4096). Each step is
    # ~20 small element-wise calls, each waking the OpenMP threads; with PASSIVE waiting 4096
    # is ~15% faster per pixel decoder than 1024 (Swin-L 1024x2048 bf16, 3.3 s vs 3.9 s), and
    # equal with spinning threads or beside a competing job.
    chunk = 4096
    inexact = False  # see layers.allow_inexact

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int):
        super().__init__()
        self.num_levels, self.num_heads, self.num_points = num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start on a ring of directions, one per head, growing with the point index.
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.constant_(lin.bias, 0.0)

    def _query_projection(self, query: Tensor) -> Tensor:
        """(N, Lq, C) -> (N, Lq, 3*M*L*P): x offsets, y offsets, attention logits, one linear."""
        c = query.shape[-1]
        k = self.num_heads * self.num_levels * self.num_points
        if not (isinstance(self.sampling_offsets.weight, Tensor) and isinstance(self.attention_weights.weight, Tensor)):
            # Replaced layers (e.g. dynamically quantized ones): run them as they are.
            off = self.sampling_offsets(query).unflatten(-1, (k, 2)).transpose(-1, -2).flatten(-2)
            return torch.cat([off, self.attention_weights(query)], -1)
        off_w = self.sampling_offsets.weight.view(k, 2, c).transpose(0, 1).reshape(2 * k, c)
        off_b = self.sampling_offsets.bias.view(k, 2).t().reshape(2 * k)
        weight = torch.cat([off_w, self.attention_weights.weight])
        bias = torch.cat([off_b, self.attention_weights.bias])
        return F.linear(query, weight, bias)

    def samples_fast(self, query: Tensor) -> bool:
        """Whether this call takes the ``embedding_bag`` sampling (see the class docstring)."""
        return layers.inexact_inference(self, query)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        """query: (N, Lq, C); reference: (N, Lq, L, 2) normalised (x, y); value: (N, S, C)."""
        n, lq, c = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        if not self.samples_fast(query):
            # Passed as temporaries, so the reference lets each go once copied (memory peak).
            normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=torch.long, device=query.device)
            return self.output_proj(deformable_attention_reference(
                self.value_proj(value).view(n, value.shape[1], m, c // m), shapes,
                reference[:, :, None, :, None, :]
                + self.sampling_offsets(query).view(n, lq, m, lv, p, 2) / normaliser[None, None, None, :, None, :],
                F.softmax(self.attention_weights(query).view(n, lq, m, lv * p), -1).view(n, lq, m, lv, p)))
        k = lv * p
        f = position_dtype(query.dtype)
        v = self.value_proj(value)
        # Under autocast the table keeps value_proj's bf16 / fp16 (those are its values; the
        # output projection rounds the sum to it again): an embedding_bag of half the bytes,
        # ~1.8x faster. Positions and bilinear weights are still computed in float32.
        table = padded_value_table(v, shapes).to(v.dtype if layers.autocast_inference(query) else f)
        table = table.view(n, -1, c // m)
        proj = self._query_projection(query)
        geom = SamplingGeometry(shapes, m, p, query.device, f)
        # Every column's reference point and level size, x then y: (N, Lq, 2, 1, L*P), (2, 1, L*P).
        ref = reference.to(f).transpose(-1, -2).unsqueeze(-2).unsqueeze(-1).expand(n, lq, 2, 1, lv, p).flatten(-2)
        size = geom.size.t().view(2, 1, lv, 1).expand(2, 1, lv, p).flatten(-2)
        outs = []
        for b in range(n):
            for q0 in range(0, lq, self.chunk):
                q1 = min(q0 + self.chunk, lq)
                pr = proj[b, q0:q1].to(f).view(q1 - q0, 3, m, k)
                xy = pixel_coordinate(ref[b, q0:q1], pr[:, :2], size)
                outs.append(deformable_attention(table[b], geom, xy, _softmax(pr[:, 2])))
        out = torch.cat(outs).view(n, lq, c).to(query.dtype)
        return self.output_proj(out)


class DeformableEncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, num_levels: int, num_heads: int, num_points: int, dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, reference: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference, src, shapes)))
        ffn = by_token_blocks(lambda t: self.linear2(self.dropout(F.relu(self.linear1(t)))), src)
        return self.norm2(src + self.dropout(ffn))


class DeformableEncoder(nn.Module):
    def __init__(self, layers: list[DeformableEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class DeformableTransformer(nn.Module):
    """Holds ``level_embed`` and ``encoder.layers`` under the original's names."""

    def __init__(self, dim: int, ffn_dim: int, num_layers: int, num_levels: int, num_heads: int,
                 num_points: int, dropout: float):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(num_levels, dim))
        nn.init.normal_(self.level_embed)
        self.encoder = DeformableEncoder(
            [DeformableEncoderLayer(dim, ffn_dim, num_levels, num_heads, num_points, dropout) for _ in range(num_layers)]
        )

    def forward(self, srcs: list[Tensor], pos: list[Tensor], release: bool = False) -> Tensor:
        """srcs, pos: per level (N, C, H_l, W_l). Returns (N, S, C), levels concatenated.
        ``release``: the caller gives both lists up; they are emptied once copied."""
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, p in enumerate(pos)], 1
        )
        if release:  # two maps per level fewer during the encoder (Swin-L 1024x2048: 88 MB)
            srcs.clear()
            pos.clear()
        reference = reference_points(shapes, src.device, position_dtype(src.dtype))
        reference = reference.expand(src.shape[0], -1, len(shapes), -1)
        if layers.autocast_inference(src):  # the embeddings once in src's dtype, not a mixed add per layer
            pos_flat = pos_flat.to(src.dtype)
        for layer in self.encoder.layers:
            src = layer(src, pos_flat, reference, shapes)
        return src


def reference_points(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
    """(1, S, 1, 2) normalised (x, y) centres of every pixel of every level.

    No padding mask is applied (valid ratios are 1), as in the original network."""
    pts = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        pts.append(torch.stack((xs.reshape(-1) / w, ys.reshape(-1) / h), -1))
    return torch.cat(pts, 0)[None, :, None].to(dtype)


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(self, in_channels: list[int], in_strides: list[int], cfg: Mask2FormerConfig):
        super().__init__()
        dim = cfg.feature_size
        self.num_levels = 3  # the deformable encoder sees the three coarsest maps
        coarse = list(zip(in_channels, in_strides))[-self.num_levels:][::-1]  # res5, res4, res3
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(32, dim)) for c, _ in coarse
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.transformer = DeformableTransformer(
            dim, cfg.encoder_feedforward_dim, cfg.encoder_layers, self.num_levels,
            cfg.num_attention_heads, 4, cfg.dropout,
        )
        self.mask_features = nn.Conv2d(dim, cfg.mask_feature_size, 1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.constant_(self.mask_features.bias, 0)
        # FPN levels finer than the encoder's finest stride, down to common_stride.
        num_fpn = int(math.log2(min(s for _, s in coarse)) - math.log2(cfg.common_stride))
        self.lateral, self.output = [], []
        for idx, c in enumerate(in_channels[:num_fpn]):
            lateral = NormConv2d(c, dim, 1, nn.GroupNorm(32, dim))
            output = NormConv2d(dim, dim, 3, nn.GroupNorm(32, dim), relu=True)
            for conv in (lateral, output):
                nn.init.kaiming_uniform_(conv.weight, a=1)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            self.lateral.append(lateral)
            self.output.append(output)
        self.num_fpn = num_fpn

    def forward(self, features: list[Tensor], release: bool = False) -> tuple[Tensor, list[Tensor]]:
        """features: backbone maps, finest first. Returns the mask features (N, mask_dim, H/4, W/4)
        and the three multi-scale maps for the transformer decoder, coarsest first.

        ``release``: the caller gives the list up, and each map is set to None in it once read
        (in inference the backbone's maps are a large part of the memory peak: 190 MB for
        Swin-L at 1024x2048)."""
        coarse = features[-self.num_levels:][::-1]
        if release:
            features[-self.num_levels:] = [None] * self.num_levels
        srcs = [proj(_conv_input(x)) for proj, x in zip(self.input_proj, coarse)]
        del coarse
        pos = [sine_position_encoding(x.shape[0], x.shape[2], x.shape[3], x.shape[1] // 2, x.device, x.dtype)
               for x in srcs]
        sizes = [s.shape[-2:] for s in srcs]
        memory = self.transformer(srcs, pos, release=True)  # not read again: fewer maps alive
        del srcs, pos
        heap.release_free_pages(memory)  # the encoder's temporaries (see heap)
        n = memory.shape[0]
        outs, start = [], 0
        for h, w in sizes:
            outs.append(memory[:, start:start + h * w].transpose(1, 2).reshape(n, -1, h, w))
            start += h * w
        for idx in range(self.num_fpn - 1, -1, -1):
            x = self.lateral[idx](_conv_input(features[idx]))
            if release:
                features[idx] = None
            # Resized as the strided view of the encoder's memory, as the original does: a
            # contiguous copy is cheaper but takes another kernel, which rounds differently.
            # Under bf16 / fp16 the bits are not the original's anyway: a contiguous copy in
            # x's dtype resizes about 4x faster than the (channels-last) view.
            coarsest = outs[-1].to(x.dtype).contiguous() if layers.autocast_inference(x) else outs[-1]
            up = F.interpolate(coarsest, size=x.shape[-2:], mode="bilinear", align_corners=False)
            if torch.is_grad_enabled():
                outs.append(self.output[idx](x + up))
            else:  # inference: fewer full-resolution maps alive at once (memory peak)
                x = x.add_(up.to(x.dtype))  # bf16 += fp32 in place is a slow mixed-dtype kernel
                del up
                layer = self.output[idx]
                y = layer._conv_forward(x, layer.weight, layer.bias)  # the conv itself (an int8 model swaps it)
                del x  # the sum is not read again: one full-resolution map fewer at the norm
                y = _norm_relu_inplace(layer, y)  # rebound, so the conv's output goes once normalised
                outs.append(y)
        return self.mask_features(outs[-1]), outs[: self.num_levels]


def _conv_input(x: Tensor) -> Tensor:
    """A backbone map as a convolution's input: float32, except under autocast inference,
    which casts it to bf16 / fp16 itself (a float32 copy first would be a wasted pass)."""
    return x if layers.autocast_inference(x) else x.float()


def _norm_relu_inplace(layer: NormConv2d, y: Tensor) -> Tensor:
    """The rest of ``layer`` after its conv, on the conv's output y, with the ReLU in place
    (inference only)."""
    if layer.norm is not None:
        y = layer.norm(y)
    return F.relu_(y) if layer.relu else y
