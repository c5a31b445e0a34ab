"""Masked-attention transformer decoder (``MultiScaleMaskedTransformerDecoder``).

Learnable queries attend, layer by layer, to one of the three multi-scale features in turn
(coarsest first). Each layer's cross-attention only sees the pixels inside the mask that the
previous prediction head drew (sigmoid >= 0.5). A prediction head (class + mask) runs before
the first layer and after every layer; all of them are returned for deep supervision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Mask2FormerConfig
from .layers import MLP, inexact_inference
from .position_encoding import sine_position_encoding


def head_masks(mask_logits: Tensor, size: tuple[int, int], heads: int, per_head: bool = True) -> Tensor:
    """Attention mask of the next layer, computed as the original computes it.

    mask_logits: (B, Q, H/4, W/4) -> (B*heads, Q, h*w) bool, True = may not attend (the mask
    drawn at the next level's size, sigmoid < 0.5). A query whose mask covers nothing may see
    everything instead, since it would otherwise attend to nothing. ``per_head`` False: the
    same booleans once, (B, 1, Q, h*w), for :func:`shared_mask_attention`."""
    small = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    # Compared before the per-head copies: the same booleans, an eighth of the float temporaries.
    blocked = (small.sigmoid() < 0.5).flatten(2).unsqueeze(1).detach()  # (B, 1, Q, h*w)
    # Rows that block everything, found once for all heads (the heads are copies) and with
    # all(): the original's sum over the booleans makes an int64 copy, 8x the mask.
    blocked = blocked & ~blocked.all(-1, keepdim=True)  # not masked_fill: ONNX Runtime has no bool Where
    return blocked.repeat(1, heads, 1, 1).flatten(0, 1) if per_head else blocked


def in_projection(attn: nn.MultiheadAttention, x: Tensor, i: int) -> Tensor:
    """``attn``'s query (i=0), key (1) or value (2) projection of x (..., C), as its packed
    ``in_proj_weight`` / ``in_proj_bias`` hold them."""
    c, bias = attn.embed_dim, attn.in_proj_bias
    return F.linear(x, attn.in_proj_weight[i * c:(i + 1) * c], None if bias is None else bias[i * c:(i + 1) * c])


def shared_mask_attention(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, blocked: Tensor) -> Tensor:
    """``attn``'s arithmetic with one mask for all heads, through SDPA: no per-head boolean
    copies and no float mask of (B*heads, Q, L) (at 1024x2048, 26M elements per layer).
    Float rounding differs from nn.MultiheadAttention's, so only autocast inference and the
    int8 copy use it.

    q: (Q, B, C); k, v: (L, B, C); blocked: (B, 1, Q, L) bool, True = may not attend.
    Returns (Q, B, C)."""
    c, h = q.shape[-1], attn.num_heads

    def heads(x: Tensor, i: int) -> Tensor:  # (L, B, C) -> (B, heads, L, d)
        return in_projection(attn, x, i).view(x.shape[0], x.shape[1], h, c // h).permute(1, 2, 0, 3)

    out = F.scaled_dot_product_attention(heads(q, 0), heads(k, 1), heads(v, 2), attn_mask=blocked.logical_not())
    return attn.out_proj(out.permute(2, 0, 1, 3).flatten(2))


# Bytes of each (heads, Q, L) temporary in one step of stepped_attention. Smaller steps were
# faster on an idle CPU but up to 1.6x slower beside a competing job (more, smaller parallel
# regions); 32 MB won in both (A/B in docs/performance.md).
ATTENTION_STEP_BYTES = 32 * 2**20


def stepped_attention(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, blocked: Tensor,
                      step_bytes: int = ATTENTION_STEP_BYTES) -> Tensor:
    """``attn(q, k, v, attn_mask=blocked)[0]`` in inference, bit for bit on the CPU, a few heads
    at a time: the float mask, scores and probabilities of all heads, (B*heads, Q, L) each,
    are the decoder's largest temporaries (3 x 105 MB per stride-8 layer at 1024x2048); here
    the scores and then the probabilities are made in the mask's buffer, so a step holds
    one such tensor of a few heads.

    The operations are nn.MultiheadAttention's own (its explicit path, which transformers and
    the original take); on the CPU its batched products already run one head at a time, so
    taking the heads in steps computes the same bits.

    q: (Q, B, C); k, v: (L, B, C); blocked: (B*heads, Q, L) bool, True = may not attend.
    Returns (Q, B, C)."""
    tq, b, c = q.shape
    heads, length = attn.num_heads, k.shape[0]
    d = c // heads

    def split(x: Tensor, i: int) -> Tensor:  # (L, B, C) -> (B*heads, L, d), as a view
        return in_projection(attn, x, i).view(x.shape[0], b * heads, d).transpose(0, 1)

    qh = split(q, 0) * math.sqrt(1.0 / float(d))
    kh, vh = split(k, 1), split(v, 2)
    out = qh.new_empty(b * heads, tq, d)
    step = max(1, step_bytes // max(tq * length * qh.element_size(), 1))
    for s in range(0, b * heads, step):
        e = min(s + step, b * heads)
        scores = qh.new_zeros(blocked[s:e].shape).masked_fill_(blocked[s:e], float("-inf"))
        scores.baddbmm_(qh[s:e], kh[s:e].transpose(-2, -1))  # in place: baddbmm copies the mask first anyway
        # The softmax in place too: the same kernel, element by element (F.softmax's bits).
        torch.bmm(torch._softmax(scores, -1, False, out=scores), vh[s:e], out=out[s:e])
        del scores
    return attn.out_proj(out.transpose(0, 1).reshape(tq * b, c)).view(tq, b, c)


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor, memory: Tensor, mask: Optional[Tensor], pos: Tensor, query_pos: Tensor) -> Tensor:
        """mask: (B*heads, Q, L) as the original's, or (B, 1, Q, L) shared by all heads."""
        q = self.norm(tgt) if self.pre_norm else tgt
        if mask is not None and mask.dim() == 4:
            out = shared_mask_attention(self.multihead_attn, q + query_pos, memory + pos, memory, mask)
        elif mask is not None and memory.device.type == "cpu" and not (torch.is_grad_enabled() or self.training):
            out = stepped_attention(self.multihead_attn, q + query_pos, memory + pos, memory, mask)
        else:
            out = self.multihead_attn(q + query_pos, memory + pos, memory, attn_mask=mask)[0]
        out = tgt + self.dropout(out)
        return out if self.pre_norm else self.norm(out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor, query_pos: Tensor, weights: Optional[list[Tensor]] = None) -> Tensor:
        """``weights``: a list to append the attention weights (B, heads, Q, Q) to."""
        x = self.norm(tgt) if self.pre_norm else tgt
        q = x + query_pos
        out, probs = self.self_attn(q, q, x, average_attn_weights=False)
        if weights is not None:
            weights.append(probs)
        out = tgt + self.dropout(out)
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
    inexact = False  # see layers.allow_inexact

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
        (B, Q, K+1) and mask logits (B, Q, H/4, W/4). Inside, tensors are sequence-first
        (L, B, C) and attention runs through ``nn.MultiheadAttention`` with per-head boolean
        masks, as in the original (CPU inference: its operations a few heads at a time,
        :func:`stepped_attention`), so that the logits are the original's bit for bit (under
        inexact inference, :func:`shared_mask_attention`, ~2.5x faster at 1024x2048). With
        ``auxiliary_masks`` off (inference that only needs the final prediction), each
        earlier prediction's full-size mask logits are dropped once its attention mask is
        drawn: the same numbers, without holding every layer's masks.
        """
        b = mask_features.shape[0]
        srcs, pos, sizes = [], [], []
        for i, x in enumerate(features):
            sizes.append(tuple(x.shape[-2:]))
            p = sine_position_encoding(b, x.shape[2], x.shape[3], self.query_embed.embedding_dim // 2, x.device, x.dtype)
            pos.append(p.flatten(2).permute(2, 0, 1))
            srcs.append((self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)  # (Q, B, C)
        out = self.query_feat.weight.unsqueeze(1).repeat(1, b, 1)
        classes: list[Tensor] = []
        masks: list[Optional[Tensor]] = []
        for i in range(self.num_layers + 1):
            x = self.decoder_norm(out).transpose(0, 1)
            if record is not None and record.intermediate is not None:
                record.intermediate.append(x.transpose(0, 1))
            classes.append(self.class_embed(x))
            mask = self.mask_logits(self.mask_embed(x), mask_features)
            last = i == self.num_layers
            masks.append(mask if last or self.auxiliary_masks else None)
            if last:
                break
            nxt = i % self.num_levels  # the level the next layer attends to
            # Inexact inference (bits are not the original's anyway): one mask for all heads.
            shared = inexact_inference(self, mask)
            attn_mask = head_masks(mask, sizes[nxt], self.num_heads, per_head=not shared)
            del mask
            if record is not None and record.hidden_states is not None:
                record.hidden_states.append(out)  # the very tensor the layer reads (gradients reach it)
            out = self.transformer_cross_attention_layers[i](out, srcs[nxt], attn_mask, pos[nxt], query_pos)
            out = self.transformer_self_attention_layers[i](out, query_pos, record.attentions if record else None)
            out = self.transformer_ffn_layers[i](out)
        if record is not None:
            record.last_hidden_state = out.transpose(0, 1)
            if record.hidden_states is not None:
                record.hidden_states.append(out)
        return classes, masks

    @staticmethod
    def mask_logits(embed: Tensor, mask_features: Tensor) -> Tensor:
        """(B, Q, D) x (B, D, H, W) -> (B, Q, H, W)."""
        if mask_features.is_contiguous():  # the original's product (fp32: its bits)
            return torch.einsum("bqc,bchw->bqhw", embed, mask_features)
        # Channels-last maps (the bf16 / fp16 modes): one product with the maps as a
        # transposed operand, where einsum would copy them to (B, D, H*W) in every layer.
        b, d, h, w = mask_features.shape
        flat = mask_features.permute(0, 2, 3, 1).reshape(b, h * w, d)  # a view when channels-last
        return torch.bmm(embed, flat.transpose(1, 2)).view(b, -1, h, w)
