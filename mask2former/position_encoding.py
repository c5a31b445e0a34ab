"""Sine position encoding (DETR style, normalised to 2π) used by both decoders."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_position_encoding(b: int, h: int, w: int, num_feats: int, device: torch.device,
                           dtype: torch.dtype = torch.float32, temperature: float = 10000.0) -> Tensor:
    """(B, 2*num_feats, H, W) encoding of an unmasked map: y features then x features.

    The original computes it from a cumulative sum over an all-valid mask, which is the
    1..H / 1..W ramp built here directly.
    """
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    y = y / (y[-1:] + eps) * scale
    x = x / (x[-1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    py, px = y[:, None] / dim_t, x[:, None] / dim_t  # (H, F), (W, F)
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((py[:, None, :].expand(h, w, -1), px[None, :, :].expand(h, w, -1)), dim=2)
    return pos.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1).to(dtype)
