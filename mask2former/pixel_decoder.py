"""Multi-scale deformable-attention pixel decoder (``MSDeformAttnPixelDecoder``).

A 6-layer deformable-attention encoder (Zhu et al., Deformable DETR) runs over the stride
8/16/32 backbone features; an FPN step adds the stride-4 feature, from which a 1x1 conv gives
the per-pixel mask features. Deformable attention here is pure PyTorch (bilinear
``grid_sample``), so it runs anywhere without a compiled extension.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Mask2FormerConfig
from .layers import NormConv2d
from .position_encoding import sine_position_encoding


def deformable_attention(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """Bilinear sampling of each level at the predicted locations, weighted and summed.

    value: (N, S, M, D) with S = sum of H_l*W_l; locations: (N, Lq, M, L, P, 2) in [0, 1];
    weights: (N, Lq, M, L, P), softmaxed over L*P. Returns (N, Lq, M*D).
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    grids = 2 * locations - 1
    out = value.new_zeros(n * m, d, lq)
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        start += h * w
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * m, lq, p, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N*M, D, Lq, P)
        a = weights[:, :, :, lvl].transpose(1, 2).reshape(n * m, 1, lq, p)
        # Summing level by level keeps only one level's samples alive at a time.
        out += (sampled * a).sum(-1)
    return out.view(n, m * d, lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
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

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        """query: (N, Lq, C); reference: (N, Lq, L, 2) normalised (x, y); value: (N, S, C)."""
        n, lq, c = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(n, value.shape[1], m, c // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
        normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        return self.output_proj(deformable_attention(v, shapes, locations, weights))


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
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
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

    def forward(self, srcs: list[Tensor], pos: list[Tensor]) -> Tensor:
        """srcs, pos: per level (N, C, H_l, W_l). Returns (N, S, C), levels concatenated."""
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, p in enumerate(pos)], 1
        )
        reference = reference_points(shapes, src.device, src.dtype).expand(src.shape[0], -1, len(shapes), -1)
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

    def forward(self, features: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """features: backbone maps, finest first. Returns the mask features (N, mask_dim, H/4, W/4)
        and the three multi-scale maps for the transformer decoder, coarsest first."""
        coarse = features[-self.num_levels:][::-1]
        srcs = [proj(x.float()) for proj, x in zip(self.input_proj, coarse)]
        pos = [sine_position_encoding(x.shape[0], x.shape[2], x.shape[3], x.shape[1] // 2, x.device, x.dtype)
               for x in srcs]
        memory = self.transformer(srcs, pos)
        n = memory.shape[0]
        outs, start = [], 0
        for s in srcs:
            h, w = s.shape[-2:]
            outs.append(memory[:, start:start + h * w].transpose(1, 2).reshape(n, -1, h, w))
            start += h * w
        for idx in range(self.num_fpn - 1, -1, -1):
            x = self.lateral[idx](features[idx].float())
            y = x + F.interpolate(outs[-1], size=x.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(self.output[idx](y))
        return self.mask_features(outs[-1]), outs[: self.num_levels]
