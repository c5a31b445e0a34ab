"""Masked-attention transformer decoder (``MultiScaleMaskedTransformerDecoder``).

Learnable queries attend, layer by layer, to one of the three multi-scale features in turn
(coarsest first). Each layer's cross-attention only sees the pixels inside the mask that the
previous prediction head drew (sigmoid >= 0.5). A prediction head (class + mask) runs before
the first layer and after every layer; all of them are returned for deep supervision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Mask2FormerConfig
from .layers import MLP
from .position_encoding import sine_position_encoding


def multi_head_attention(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor,
                         mask: Optional[Tensor] = None, weights: Optional[list[Tensor]] = None) -> Tensor:
    """nn.MultiheadAttention's math (its parameters, batch-first tensors) on SDPA.

    q: (B, Lq, C); k, v: (B, Lk, C); mask: additive float mask broadcastable to
    (B, heads, Lq, Lk) (0 = may attend, -inf = may not), e.g. (B, 1, Lq, Lk) for all heads.
    ``weights``: a list to append the attention weights (B, heads, Lq, Lk) to; the attention
    is then computed explicitly (SDPA does not return them), equal up to float rounding.
    """
    b, lq, c = q.shape
    h = attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(q, w[:c], bias[:c]).view(b, lq, h, c // h).transpose(1, 2)
    k = F.linear(k, w[c:2 * c], bias[c:2 * c]).view(b, -1, h, c // h).transpose(1, 2)
    v = F.linear(v, w[2 * c:], bias[2 * c:]).view(b, -1, h, c // h).transpose(1, 2)
    drop = attn.dropout if attn.training else 0.0
    if weights is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
    else:
        scores = q @ k.transpose(-1, -2) * (c // h) ** -0.5
        probs = (scores if mask is None else scores + mask).softmax(-1)
        weights.append(probs)
        out = F.dropout(probs, drop, attn.training) @ v
    return attn.out_proj(out.transpose(1, 2).reshape(b, lq, c))


def additive_mask(blocked: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, Q, L) bool, True = may not attend -> (B, 1, Q, L) additive mask shared by all heads.

    A query whose mask covers nothing would attend to nothing: it may see everything instead.
    """
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    mask = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device)
    return mask.masked_fill_(blocked, float("-inf")).unsqueeze(1)


def _resize_axis(x: Tensor, dim: int, size: int) -> Tensor:
    """Bilinear (align_corners=False) resize of one axis, by gathering the two source lines
    each output line mixes (F.interpolate's indices and weights)."""
    n = x.shape[dim]
    if n == size:
        return x
    src = ((torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) * (n / size) - 0.5).clamp_(min=0)
    i0 = src.long().clamp_(max=n - 1)
    i1 = (i0 + 1).clamp_(max=n - 1)
    shape = [1] * x.dim()
    shape[dim] = size
    w1 = (src - i0).to(x.dtype).view(shape)
    return x.index_select(dim, i0) * (1 - w1) + x.index_select(dim, i1) * w1


def bilinear_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C, *size), F.interpolate's bilinear up to float rounding, at the
    cost of the output (CPU's interpolate copies a large input to shrink it)."""
    return _resize_axis(_resize_axis(x, 2, size[0]), 3, size[1])


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor, memory: Tensor, mask: Optional[Tensor], pos: Tensor, query_pos: Tensor) -> Tensor:
        q = self.norm(tgt) if self.pre_norm else tgt
        out = tgt + self.dropout(multi_head_attention(self.multihead_attn, q + query_pos, memory + pos, memory, mask))
        return out if self.pre_norm else self.norm(out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor, query_pos: Tensor, weights: Optional[list[Tensor]] = None) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        out = tgt + self.dropout(multi_head_attention(self.self_attn, x + query_pos, x + query_pos, x, weights=weights))
        return out if self.pre_norm else self.norm(out)


class FFNLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        out = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return out if self.pre_norm else self.norm(out)


@dataclass
class DecoderRecord:
    """What :class:`MultiScaleMaskedTransformerDecoder` keeps besides its predictions, for
    transformers' output fields. A list that is None is not collected (costs nothing).

    hidden_states: every layer's input, then the last output, (Q, B, C) each;
    intermediate: the normalised state each prediction is made from, (Q, B, C) each;
    attentions: every layer's self-attention weights (B, heads, Q, Q);
    last_hidden_state: the last layer's output (B, Q, C), always set.
    """

    hidden_states: Optional[list[Tensor]] = None
    intermediate: Optional[list[Tensor]] = None
    attentions: Optional[list[Tensor]] = None
    last_hidden_state: Optional[Tensor] = None


class MultiScaleMaskedTransformerDecoder(nn.Module):
    def __init__(self, in_channels: int, cfg: Mask2FormerConfig):
        super().__init__()
        dim, heads, n = cfg.hidden_dim, cfg.num_attention_heads, cfg.decoder_layers - 1
        self.num_heads, self.num_layers, self.num_levels = heads, n, 3
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads, 0.0, cfg.pre_norm) for _ in range(n))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, heads, 0.0, cfg.pre_norm) for _ in range(n))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim, cfg.dim_feedforward, 0.0, cfg.pre_norm) for _ in range(n))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(cfg.num_queries, dim)
        self.query_embed = nn.Embedding(cfg.num_queries, dim)
        self.level_embed = nn.Embedding(self.num_levels, dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_levels):
            if in_channels != dim or cfg.enforce_input_projection:
                conv = nn.Conv2d(in_channels, dim, 1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        # Off: earlier predictions skip their full-size mask logits (see forward); inference only.
        self.auxiliary_masks = True
        self.class_embed = nn.Linear(dim, cfg.num_labels + 1)
        self.mask_embed = MLP(dim, dim, cfg.mask_feature_size, 3)
        for layer in list(self.transformer_self_attention_layers) + list(self.transformer_cross_attention_layers) \
                + list(self.transformer_ffn_layers):
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def forward(self, features: list[Tensor], mask_features: Tensor, record: Optional[DecoderRecord] = None,
                ) -> tuple[list[Tensor], list[Optional[Tensor]]]:
        """features: three maps (B, C, H_l, W_l), coarsest first; mask_features: (B, D, H/4, W/4).
        ``record``: filled with what it asks for (see :class:`DecoderRecord`).

        Returns per-prediction lists (first = before any layer, last = final) of class logits
        (B, Q, K+1) and mask logits (B, Q, H/4, W/4). With ``auxiliary_masks`` off (inference
        that only needs the final prediction), earlier mask logits are None: each layer's
        attention mask is then computed at its feature map's size from mask features
        resized once per level (resizing is linear, so this equals resizing the mask logits
        up to float rounding), instead of from full-resolution masks.
        """
        b = mask_features.shape[0]
        srcs, pos, sizes = [], [], []
        for i, x in enumerate(features):
            sizes.append(tuple(x.shape[-2:]))
            p = sine_position_encoding(b, x.shape[2], x.shape[3], self.query_embed.embedding_dim // 2, x.device, x.dtype)
            pos.append(p.flatten(2).transpose(1, 2))
            srcs.append((self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).transpose(1, 2))
        lean = not self.auxiliary_masks
        level_features = None
        if lean:  # mask features at each level's size, (B, D, H_l*W_l)
            level_features = [bilinear_resize(mask_features, s).flatten(2) for s in sizes]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        out = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)
        classes: list[Tensor] = []
        masks: list[Optional[Tensor]] = []
        for i in range(self.num_layers + 1):
            last = i == self.num_layers
            x = self.decoder_norm(out)
            if record is not None and record.intermediate is not None:
                record.intermediate.append(x.transpose(0, 1))
            classes.append(self.class_embed(x))
            embed = self.mask_embed(x)
            nxt = i % self.num_levels  # the level the next layer attends to
            if lean:
                masks.append(self.mask_logits(embed, mask_features) if last else None)
                if not last:
                    small = torch.bmm(embed, level_features[nxt])
            else:
                masks.append(self.mask_logits(embed, mask_features))
                if not last:
                    small = F.interpolate(masks[-1], size=sizes[nxt], mode="bilinear", align_corners=False).flatten(2)
            if last:
                break
            if record is not None and record.hidden_states is not None:
                # Recorded in transformers' (Q, B, C) layout, as the tensor the layer reads (gradients reach it).
                record.hidden_states.append(out.transpose(0, 1))
                out = record.hidden_states[-1].transpose(0, 1)
            attn_mask = additive_mask((small.sigmoid() < 0.5).detach(), srcs[nxt].dtype)
            out = self.transformer_cross_attention_layers[i](out, srcs[nxt], attn_mask, pos[nxt], query_pos)
            weights = record.attentions if record is not None else None
            out = self.transformer_self_attention_layers[i](out, query_pos, weights)
            out = self.transformer_ffn_layers[i](out)
        if record is not None:
            record.last_hidden_state = out
            if record.hidden_states is not None:
                record.hidden_states.append(out.transpose(0, 1))
        return classes, masks

    @staticmethod
    def mask_logits(embed: Tensor, mask_features: Tensor) -> Tensor:
        """(B, Q, D) x (B, D, H, W) -> (B, Q, H, W)."""
        return torch.einsum("bqc,bchw->bqhw", embed, mask_features)
