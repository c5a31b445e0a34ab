"""Parameter names: Hugging Face ``transformers`` Mask2Former <-> ours (= the original's).

Each rule pairs a Hugging Face name template with ours. ``{i}`` matches a number, ``{p}`` a
parameter kind; ``{s+2}`` in one template means that number plus 2 of the same variable in
the other. Rules marked ``fuse`` join three HF tensors (q, k, v) into our one fused tensor.
The first rule for a name is the one used when writing; the others are older or newer
``transformers`` spellings accepted when reading.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from .safetensors_reader import concat_rows

_P = "weight|bias|running_mean|running_var"
_PIX = "model.pixel_level_module."
_TR = "model.transformer_module."
_SW = "backbone.layers.{i}.blocks.{j}."
_HSW = _PIX + "encoder.encoder.layers.{i}.blocks.{j}."
_HSW5 = _PIX + "encoder.swin.encoder.layers.{i}.blocks.{j}."
_RES = "backbone.res{s+2}.{j}."
_HRES = _PIX + "encoder.encoder.stages.{s}.layers.{j}."
_DEF = "pixel_decoder.transformer.encoder.layers.{i}."
_HDEF = _PIX + "decoder.encoder.layers.{i}."
_DEC = "transformer_decoder."
_HDEC = _TR + "decoder.layers.{i}."

# (hf template, our template, fused HF part names or None)
RULES: list[tuple[str, str, Optional[tuple[str, ...]]]] = [
    # Swin
    (_PIX + "encoder.embeddings.patch_embeddings.projection.{p}", "backbone.patch_embed.proj.{p}", None),
    (_PIX + "encoder.embeddings.norm.{p}", "backbone.patch_embed.norm.{p}", None),
    (_HSW + "layernorm_before.{p}", _SW + "norm1.{p}", None),
    (_HSW + "layernorm_after.{p}", _SW + "norm2.{p}", None),
    (_HSW + "attention.self.relative_position_bias_table", _SW + "attn.relative_position_bias_table", None),
    (_HSW + "attention.self.{f}.{p}", _SW + "attn.qkv.{p}", ("query", "key", "value")),
    (_HSW + "attention.output.dense.{p}", _SW + "attn.proj.{p}", None),
    (_HSW + "intermediate.dense.{p}", _SW + "mlp.fc1.{p}", None),
    (_HSW + "output.dense.{p}", _SW + "mlp.fc2.{p}", None),
    (_PIX + "encoder.encoder.layers.{i}.downsample.reduction.{p}", "backbone.layers.{i}.downsample.reduction.{p}", None),
    (_PIX + "encoder.encoder.layers.{i}.downsample.norm.{p}", "backbone.layers.{i}.downsample.norm.{p}", None),
    (_PIX + "encoder.hidden_states_norms.stage{k+1}.{p}", "backbone.norm{k}.{p}", None),
    # Swin as transformers >= 5 names it in memory (accepted when reading)
    (_PIX + "encoder.swin.embeddings.patch_embeddings.projection.{p}", "backbone.patch_embed.proj.{p}", None),
    (_PIX + "encoder.swin.embeddings.norm.{p}", "backbone.patch_embed.norm.{p}", None),
    (_HSW5 + "layernorm_before.{p}", _SW + "norm1.{p}", None),
    (_HSW5 + "layernorm_after.{p}", _SW + "norm2.{p}", None),
    (_HSW5 + "attention.relative_position_bias.relative_position_bias_table",
     _SW + "attn.relative_position_bias_table", None),
    (_HSW5 + "attention.{f}.{p}", _SW + "attn.qkv.{p}", ("q_proj", "k_proj", "v_proj")),
    (_HSW5 + "attention.o_proj.{p}", _SW + "attn.proj.{p}", None),
    (_HSW5 + "mlp.fc1.{p}", _SW + "mlp.fc1.{p}", None),
    (_HSW5 + "mlp.fc2.{p}", _SW + "mlp.fc2.{p}", None),
    (_PIX + "encoder.swin.encoder.layers.{i}.downsample.reduction.{p}", "backbone.layers.{i}.downsample.reduction.{p}", None),
    (_PIX + "encoder.swin.encoder.layers.{i}.downsample.norm.{p}", "backbone.layers.{i}.downsample.norm.{p}", None),
    # ResNet
    (_PIX + "encoder.embedder.embedder.convolution.weight", "backbone.stem.conv1.weight", None),
    (_PIX + "encoder.embedder.embedder.normalization.{p}", "backbone.stem.conv1.norm.{p}", None),
    (_HRES + "shortcut.convolution.weight", _RES + "shortcut.weight", None),
    (_HRES + "shortcut.normalization.{p}", _RES + "shortcut.norm.{p}", None),
    (_HRES + "layer.{k}.convolution.weight", _RES + "conv{k+1}.weight", None),
    (_HRES + "layer.{k}.normalization.{p}", _RES + "conv{k+1}.norm.{p}", None),
    # Pixel decoder
    (_PIX + "decoder.input_projections.{i}.{k}.{p}", "pixel_decoder.input_proj.{i}.{k}.{p}", None),
    (_PIX + "decoder.level_embed", "pixel_decoder.transformer.level_embed", None),
    (_HDEF + "self_attn.{n}.{p}", _DEF + "self_attn.{n}.{p}", None),
    (_HDEF + "self_attn_layer_norm.{p}", _DEF + "norm1.{p}", None),
    (_HDEF + "fc1.{p}", _DEF + "linear1.{p}", None),
    (_HDEF + "fc2.{p}", _DEF + "linear2.{p}", None),
    (_HDEF + "final_layer_norm.{p}", _DEF + "norm2.{p}", None),
    (_PIX + "decoder.mask_projection.{p}", "pixel_decoder.mask_features.{p}", None),
    (_PIX + "decoder.adapter_{i}.0.weight", "pixel_decoder.adapter_{i}.weight", None),
    (_PIX + "decoder.adapter_{i}.1.{p}", "pixel_decoder.adapter_{i}.norm.{p}", None),
    (_PIX + "decoder.layer_{i}.0.weight", "pixel_decoder.layer_{i}.weight", None),
    (_PIX + "decoder.layer_{i}.1.{p}", "pixel_decoder.layer_{i}.norm.{p}", None),
    # Transformer decoder
    (_TR + "queries_embedder.weight", _DEC + "query_embed.weight", None),
    (_TR + "queries_features.weight", _DEC + "query_feat.weight", None),
    (_TR + "level_embed.weight", _DEC + "level_embed.weight", None),
    (_TR + "input_projections.{i}.{p}", _DEC + "input_proj.{i}.{p}", None),
    (_HDEC + "self_attn.{f}.weight", _DEC + "transformer_self_attention_layers.{i}.self_attn.in_proj_weight",
     ("q_proj", "k_proj", "v_proj")),
    (_HDEC + "self_attn.{f}.bias", _DEC + "transformer_self_attention_layers.{i}.self_attn.in_proj_bias",
     ("q_proj", "k_proj", "v_proj")),
    (_HDEC + "self_attn.out_proj.{p}", _DEC + "transformer_self_attention_layers.{i}.self_attn.out_proj.{p}", None),
    (_HDEC + "self_attn_layer_norm.{p}", _DEC + "transformer_self_attention_layers.{i}.norm.{p}", None),
    (_HDEC + "cross_attn.in_proj_{p}", _DEC + "transformer_cross_attention_layers.{i}.multihead_attn.in_proj_{p}", None),
    (_HDEC + "cross_attn.out_proj.{p}", _DEC + "transformer_cross_attention_layers.{i}.multihead_attn.out_proj.{p}", None),
    (_HDEC + "cross_attn_layer_norm.{p}", _DEC + "transformer_cross_attention_layers.{i}.norm.{p}", None),
    (_HDEC + "fc1.{p}", _DEC + "transformer_ffn_layers.{i}.linear1.{p}", None),
    (_HDEC + "fc2.{p}", _DEC + "transformer_ffn_layers.{i}.linear2.{p}", None),
    (_HDEC + "final_layer_norm.{p}", _DEC + "transformer_ffn_layers.{i}.norm.{p}", None),
    (_TR + "decoder.layernorm.{p}", _DEC + "decoder_norm.{p}", None),
    (_TR + "decoder.mask_predictor.mask_embedder.{k}.0.{p}", _DEC + "mask_embed.layers.{k}.{p}", None),
    ("class_predictor.{p}", _DEC + "class_embed.{p}", None),
]

# Tensors a checkpoint may hold that the network recomputes or never uses at inference.
IGNORED_HF = re.compile(
    r"(relative_position_index|num_batches_tracked|^criterion\.|encoder\.swin\.layernorm\.|"
    r"encoder\.layernorm\.)"
)

_FIELD = re.compile(r"\{(\w)([+-]\d+)?\}")
_KINDS = {"p": _P, "f": r"\w+", "n": r"\w+"}


@dataclass
class _Template:
    regex: re.Pattern
    text: str

    @classmethod
    def of(cls, text: str) -> "_Template":
        pattern, pos, seen = "", 0, set()
        for m in _FIELD.finditer(text):
            pattern += re.escape(text[pos:m.start()])
            var = m.group(1)
            kind = _KINDS.get(var, r"\d+")
            pattern += f"(?P={var})" if var in seen else f"(?P<{var}>{kind})"
            seen.add(var)
            pos = m.end()
        pattern += re.escape(text[pos:])
        return cls(re.compile(pattern + "$"), text)

    def parse(self, name: str) -> Optional[dict[str, str]]:
        m = self.regex.match(name)
        if m is None:
            return None
        values = dict(m.groupdict())
        for f in _FIELD.finditer(self.text):  # undo offsets: {s+2} matched s+2
            if f.group(2):
                values[f.group(1)] = str(int(values[f.group(1)]) - int(f.group(2)))
        return values

    def format(self, values: dict[str, str]) -> str:
        def sub(f: re.Match) -> str:
            v = values[f.group(1)]
            return str(int(v) + int(f.group(2))) if f.group(2) else v

        return _FIELD.sub(sub, self.text)


_COMPILED = [(_Template.of(h), _Template.of(o), fuse) for h, o, fuse in RULES]


def hf_to_ours(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a transformers state dict to ours; returns (ours, names no rule knows)."""
    out: dict[str, Tensor] = {}
    parts: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for name, tensor in state.items():
        if IGNORED_HF.search(name):
            continue
        for hf, ours, fuse in _COMPILED:
            values = hf.parse(name)
            if values is None or (fuse and values.get("f") not in fuse):
                continue
            target = ours.format(values)
            if fuse:
                parts.setdefault(target, {})[values["f"]] = tensor
                if len(parts[target]) == 3:
                    got = parts.pop(target)
                    out[target] = concat_rows([got[f] for f in fuse])  # stays lazy for file tensors
            else:
                out[target] = tensor
            break
        else:
            unknown.append(name)
    unknown.extend(f"{target} (only {sorted(got)} of its q/k/v parts)" for target, got in parts.items())
    return out, unknown


def ours_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename our state dict to the names published Hugging Face checkpoints use."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        for hf, ours, fuse in _COMPILED:
            values = ours.parse(name)
            if values is None:
                continue
            if fuse:
                for f, chunk in zip(fuse, tensor.chunk(3, 0)):
                    out[hf.format({**values, "f": f})] = chunk.contiguous()
            else:
                out[hf.format(values)] = tensor
            break
        else:
            raise KeyError(f"no Hugging Face name for parameter {name}")
    return out
