"""Swin Transformer backbone (Liu et al., ICCV 2021) as the original Mask2Former builds it
(``D2SwinTransformer``): shifted windows, feature maps padded up to the window size, a
LayerNorm on every output stage. Parameter names follow the original so its checkpoints
load without renaming.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SwinConfig
from ..layers import autocast_inference, inexact_inference
from ..pixel_decoder import by_token_blocks


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return by_token_blocks(lambda t: self.fc2(F.gelu(self.fc1(t))), x)


def relative_position_index(window: int) -> Tensor:
    """(window², window²) index into the (2w-1)² bias table for each query/key pair."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # Recomputed from the window size, so never read from or written to checkpoints.
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    # Windows attended per step: bounds the q/k/v, mask and output temporaries (memory peak)
    # to a few MB whatever the image size, instead of all windows at once. In inexact
    # inference (no fp32 bits to keep: a step's row count changes a GEMM's rounding) steps
    # are 4x larger: SDPA on 144-token windows is ~1.7x faster per FLOP at 16 windows per call
    # than at 4 (Swin-L 1024x2048 bf16 backbone 5.4 s -> 4.8 s, AMX).
    chunk_bytes = 8 * 2**20
    inexact_chunk_factor = 4
    inexact = False  # see layers.allow_inexact

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """x: (B*nW, N, C) windows of N tokens; mask: (nW, N, N) additive or None."""
        bw, n, c = x.shape
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        nw = mask.shape[0] if mask is not None else bw
        budget = self.chunk_bytes * (self.inexact_chunk_factor if inexact_inference(self, x) else 1)
        step = max(1, min(nw, budget // (4 * n * max(3 * c, self.num_heads * n))))
        # Steps never straddle two images, so each uses one slice of the (nW, ...) mask.
        seam = None if mask is None else mask.flatten(1).ne(0).any(1)  # (nW,) windows across the shift's seam
        outs = [self._attend(x[i + j:i + min(j + step, nw)], bias, None if mask is None else mask[j:j + step],
                             None if seam is None else seam[j:j + step])
                for i in range(0, bw, nw) for j in range(0, nw, step)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _attend(self, x: Tensor, bias: Tensor, mask: Optional[Tensor], seam: Optional[Tensor] = None) -> Tensor:
        """x: (windows, N, C); bias: (1, heads, N, N); mask: (windows, N, N) or None.

        seam (eager only; the export attends every window in one step): which windows cross
        the cyclic shift's seam. Only those get the materialised bias + mask, (windows, heads,
        N, N); the others share the broadcast bias, ~25% faster. The split is of attention
        alone, whose windows are independent, so every bit stays; the projections still see
        the whole step (a GEMM's rounding can depend on how many rows it gets)."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (windows, heads, N, d)
        bias = bias.to(q.dtype)
        if seam is None or bool(seam.all()):
            out = self._sdpa(q, k, v, bias, mask)
        elif not bool(seam.any()):
            out = self._sdpa(q, k, v, bias, None)
        else:
            out = q.new_empty(q.shape)
            for rows, extra in ((seam.logical_not().nonzero().flatten(), None), (seam.nonzero().flatten(), mask)):
                out[rows] = self._sdpa(q[rows], k[rows], v[rows], bias, None if extra is None else extra[rows])
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Optional[Tensor]) -> Tensor:
        # A 4-D mask: with a 3-D one SDPA falls back to its (~2.5x slower) math kernel.
        full = bias if mask is None else bias + mask.unsqueeze(1).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=full, scale=self.scale)


def padded_to_windows(n: int, ws: int) -> int:
    """n rounded up to whole windows; no negative floor division, which ONNX (whose integer
    Div truncates) would get wrong for an exported, size-independent graph."""
    return (n + ws - 1) // ws * ws


def window_partition(x: Tensor, w: int) -> Tensor:
    """(B, H, W, C) -> (B*nW, w*w, C)."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, qkv_bias: bool,
                 drop_path: float, eps: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, heads, window, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int, shift_mask: Tensor, layout: "WindowLayout") -> Tensor:
        """x: (B, H*W, C); shift_mask: (nW, w*w, w*w) for the padded map; layout: this
        block's (shifted or not) window order, see :class:`WindowLayout`."""
        b, _, c = x.shape
        # Padding happens after the norm, with zeros, exactly as the original does.
        y = layout.to_windows(self.norm1(x))
        y = self.attn(y.view(-1, self.window ** 2, c), shift_mask if self.shift else None)
        y = layout.from_windows(y.view(b, -1, c))
        if not (torch.is_grad_enabled() or self.training):  # inference: residuals in place (memory)
            x = x.add_(y)
            return x.add_(self.mlp(self.norm2(x)))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class WindowLayout:
    """Where every token goes when a (H, W) map is zero-padded to whole windows, cyclically
    shifted by ``-shift`` and cut into windows, as one gather each way (instead of pad, roll,
    partition and their inverses, each a full copy)."""

    def __init__(self, h: int, w: int, ws: int, shift: int, device: torch.device):
        hp, wp = padded_to_windows(h, ws), padded_to_windows(w, ws)
        rows = (torch.arange(hp, device=device) + shift) % hp  # padded-map row at each rolled row
        cols = (torch.arange(wp, device=device) + shift) % wp
        grid = window_partition((rows[:, None] * wp + cols[None, :]).view(1, hp, wp, 1), ws).flatten()
        r, cc = grid // wp, grid % wp
        inside = (r < h) & (cc < w)
        self.gather = torch.where(inside, r * w + cc, 0)  # token read by each window slot
        self.padding = (~inside).nonzero().flatten()  # window slots holding padding (zeros)
        slot = torch.empty(hp * wp, dtype=torch.long, device=device)
        slot[grid] = torch.arange(hp * wp, device=device)
        self.scatter = slot.view(hp, wp)[:h, :w].flatten()  # window slot of each token

    def to_windows(self, x: Tensor) -> Tensor:
        """(B, H*W, C) -> (B, nW*ws*ws, C) in window order, padding slots zero."""
        y = x.index_select(1, self.gather)
        if self.padding.numel():
            y.index_fill_(1, self.padding, 0)
        return y

    def from_windows(self, y: Tensor) -> Tensor:
        """(B, nW*ws*ws, C) -> (B, H*W, C): padding dropped, shift undone."""
        return y.index_select(1, self.scatter)


def shifted_window_mask(hp: int, wp: int, ws: int, shift: int, device: torch.device) -> Tensor:
    """(nW, ws², ws²) additive mask: -100 between tokens that came from different regions
    of the cyclically shifted map (the original's value, not -inf)."""
    region = torch.zeros(1, hp, wp, 1, device=device)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    n = 0
    for hs in cuts:
        for wsl in cuts:
            region[:, hs, wsl, :] = n
            n += 1
    ids = window_partition(region, ws).squeeze(-1)  # (nW, ws²)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class PatchMerging(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=eps)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)."""
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, cfg: SwinConfig, drop_paths: list[float], last: bool):
        super().__init__()
        ws = cfg.window_size
        self.window, self.shift = ws, ws // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, cfg.mlp_ratio, cfg.qkv_bias,
                      drop_paths[i], cfg.layer_norm_eps)
            for i in range(depth)
        )
        self.downsample = None if last else PatchMerging(dim, cfg.layer_norm_eps)

    def forward(self, x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, int, int]:
        ws = self.window
        hp, wp = padded_to_windows(h, ws), padded_to_windows(w, ws)
        mask = shifted_window_mask(hp, wp, ws, self.shift, x.device).to(x.dtype)
        layouts = [WindowLayout(h, w, ws, shift, x.device) for shift in (0, self.shift)]
        for blk in self.blocks:
            x = blk(x, h, w, mask, layouts[1 if blk.shift else 0])
        down = self.downsample(x, h, w) if self.downsample is not None else x
        return x, down, (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int, eps: float):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch
        _, _, h, w = x.shape
        if h % p or w % p:
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        if autocast_inference(x):  # channels-last output: the tokens below are a view, not a copy (~3x faster)
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.proj(x)  # (B, C, H/p, W/p)
        b, c, hh, ww = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).view(b, c, hh, ww)


class SwinTransformer(nn.Module):
    """Returns the four stage outputs ``res2``..``res5`` at strides 4, 8, 16, 32."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim, cfg.layer_norm_eps)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()  # cpu: also under torch.device("meta")
        dims = cfg.channels
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            last = i == len(cfg.depths) - 1
            self.layers.append(SwinStage(dims[i], depth, heads, cfg, rates[start:start + depth], last))
            start += depth
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d, eps=cfg.layer_norm_eps))
        self.channels = dims
        self.strides = [4, 8, 16, 32]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (B, 3, H, W) -> [(B, C_i, H/2^(i+2), W/2^(i+2)) for i in 0..3]."""
        x = self.patch_embed(x)
        b, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        outs = []
        for i, stage in enumerate(self.layers):
            out, x, nh, nw = stage(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            out = out.view(b, h, w, -1).permute(0, 3, 1, 2)  # channels-last strides
            # bf16 / fp16: left channels-last, the layout oneDNN's low-precision convolutions of
            # the pixel decoder take without reordering (about 2.5x faster FPN); fp32 keeps the
            # original's contiguous maps, hence its kernels and bits.
            outs.append(out if autocast_inference(out) else out.contiguous())
            h, w = nh, nw
        return outs
