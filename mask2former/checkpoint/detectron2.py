"""The original Mask2Former's checkpoints: model-zoo ``model_final_*.pkl`` files (a pickled dict
whose ``"model"`` maps detectron2 names to numpy arrays) and training ``.pth`` files
(``torch.save`` of a dict whose ``"model"`` holds tensors).

The files carry no configuration, so the architecture is read off the tensors' shapes. What
shapes cannot tell is fixed to the value every released config uses:

* ``pre_norm`` = False, dropout = 0, 4 sampling points per head in the deformable encoder;
* decoder heads = pixel-decoder heads (one ``NHEADS`` setting drives both in the original),
  which is read from the deformable ``attention_weights`` rows = heads x levels x 4 points;
* ResNet: stride in the 3x3 conv (``STRIDE_IN_1X1: False``) and no dilation in ``res5``.
"""
from __future__ import annotations

import builtins
import codecs
import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ..config import Mask2FormerConfig, ResNetConfig, SwinConfig
from .hf import CheckpointMismatchError
from .labels import default_id2label, normalize_id2label


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The pickle asks for a Python object other than plain containers and numpy arrays."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # numpy 1.x pickles name ``numpy.core.*``, numpy 2.x ``numpy._core.*``: both resolve to the
    # functions of the numpy installed here, taken from this table, never imported by name.
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {}
    for pkg in ("numpy.core", "numpy._core"):
        table[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol-5 arrays
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    return table


# Constructors of plain values: calling them with any arguments runs no user code.
_BUILTINS = {name: getattr(builtins, name) for name in (
    "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes", "bytearray")}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only containers, numbers, strings and numpy arrays: a pickle can run any function
    it names, so every other global is refused before it is looked up."""

    def __init__(self, file: Any, source: str):
        # latin1 reads the byte strings of arrays pickled by Python 2, as detectron2 does.
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if (module, name) == ("collections", "OrderedDict"):  # state_dict() containers
            return OrderedDict
        if (module, name) == ("_codecs", "encode"):  # how protocols 0-2 spell bytes
            return codecs.encode
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise UnsafeCheckpointError(
            f"{self.source}: refused to load the global {module}.{name}: a detectron2 checkpoint "
            "holds only dicts of numpy arrays, and unpickling anything else could run code"
        )


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a pre-1.6 torch.save file


def _torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses non-tensor objects
        raise UnsafeCheckpointError(f"{path}: torch.load(weights_only=True) refused this file: {e}") from None


def read_original_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of an original checkpoint, under the original's own names."""
    source = os.fspath(path)
    if zipfile.is_zipfile(source) or source.endswith(".pth"):
        data = _torch_load(source)
    else:
        with open(source, "rb") as f:
            try:
                data = _RestrictedUnpickler(f, source).load()
            except UnsafeCheckpointError:
                raise
            except Exception as e:
                raise ValueError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None
        if isinstance(data, int) and data == _TORCH_LEGACY_MAGIC:
            data = _torch_load(source)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]  # model-zoo and training files; the rest is bookkeeping
    if not isinstance(data, dict) or not data:
        keys = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise CheckpointMismatchError(f"{source}: expected a dict of arrays (or one under 'model'), got {keys}")
    state: dict[str, Tensor] = {}
    bad = []
    for name, value in data.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            # Arrays unpickled from bytes are read-only; torch wants memory it may write.
            state[str(name)] = torch.from_numpy(value if value.flags.writeable else value.copy())
        elif isinstance(value, Tensor):
            state[str(name)] = value
        else:
            bad.append(f"{name} ({type(value).__name__})")
    if bad:
        raise CheckpointMismatchError(f"{source}: entries that are not arrays: {', '.join(bad[:20])}")
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# Tensors the network recomputes or only training uses (num_batches_tracked: SyncBN, used by
# the Cityscapes ResNet configs, counts steps; FrozenBN has none).
_DROPPED = re.compile(r"(^criterion\.|^pixel_mean$|^pixel_std$|\.num_batches_tracked$|\.relative_position_index$)")


def original_to_ours(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Rename to our parameter names; any name no rule knows is an error (never a partial load)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state.items():
        if _DROPPED.search(name):
            continue
        if name.startswith("backbone."):
            new = name
        elif name.startswith("sem_seg_head.predictor."):
            # Released files predate the rename of the learnable query features.
            new = "transformer_decoder." + name[len("sem_seg_head.predictor."):].replace("static_query", "query_feat")
        elif name.startswith("sem_seg_head.pixel_decoder."):
            new = "pixel_decoder." + name[len("sem_seg_head.pixel_decoder."):]
        elif name.startswith("sem_seg_head."):
            # Head version 1 kept the pixel decoder's modules directly under sem_seg_head; the
            # original moves them under pixel_decoder when loading such files.
            new = "pixel_decoder." + name[len("sem_seg_head."):]
        else:
            unknown.append(name)
            continue
        if new in out:
            raise CheckpointMismatchError(f"{source}: two tensors map to {new} (e.g. both static_query and query_feat)")
        out[new] = tensor
    if unknown:
        hint = ""
        if not any(k.startswith("sem_seg_head.") for k in state):
            hint = " (no sem_seg_head.* tensors: a backbone-only ImageNet checkpoint is not a Mask2Former model)"
        raise CheckpointMismatchError(
            f"{source}: {len(unknown)} tensors with names this loader does not know{hint}: " + ", ".join(sorted(unknown)[:20])
        )
    return out


def _count(state: dict[str, Tensor], prefix: str) -> int:
    """Number of numbered children under ``prefix`` (1 + the largest index)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = [int(m.group(1)) for k in state if (m := pat.match(k))]
    return max(idx) + 1 if idx else 0


class _Shapes:
    def __init__(self, state: dict[str, Tensor], source: str):
        self.state, self.source = state, source

    def __call__(self, name: str, what: str) -> tuple[int, ...]:
        if name not in self.state:
            raise CheckpointMismatchError(f"{self.source}: cannot infer {what}: no tensor {name}")
        return tuple(self.state[name].shape)

    def fail(self, message: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(f"{self.source}: {message}")


def _check_relative_position_index(original: dict[str, Tensor], window: int, shapes: _Shapes) -> None:
    from ..backbone.swin import relative_position_index

    expected = relative_position_index(window)
    for name, t in original.items():
        if name.endswith(".relative_position_index") and not torch.equal(t.long(), expected):
            raise shapes.fail(f"{name} is not the index of a {window}x{window} window")


def _infer_swin(st: dict[str, Tensor], shapes: _Shapes) -> SwinConfig:
    dim, _, patch, _ = shapes("backbone.patch_embed.proj.weight", "the Swin embedding width")
    if "backbone.absolute_pos_embed" in st:
        raise shapes.fail("Swin with an absolute position embedding (ape=True) is not supported")
    stages = _count(st, "backbone.layers.")
    if stages != 4:
        raise shapes.fail(f"expected 4 Swin stages, found {stages}")
    depths = [_count(st, f"backbone.layers.{i}.blocks.") for i in range(stages)]
    heads, windows = [], set()
    for i, depth in enumerate(depths):
        for j in range(depth):
            rows, h = shapes(f"backbone.layers.{i}.blocks.{j}.attn.relative_position_bias_table", "Swin heads")
            w = (math.isqrt(rows) + 1) // 2
            if (2 * w - 1) ** 2 != rows:
                raise shapes.fail(f"relative position table of stage {i} has {rows} rows, not (2w-1)^2")
            windows.add(w)
            if j == 0:
                heads.append(h)
    if len(windows) != 1:
        raise shapes.fail(f"Swin stages use different window sizes {sorted(windows)}; one is supported")
    window = windows.pop()
    hidden = shapes("backbone.layers.0.blocks.0.mlp.fc1.weight", "the Swin MLP ratio")[0]
    return SwinConfig(
        embed_dim=dim, depths=depths, num_heads=heads, window_size=window, patch_size=patch,
        mlp_ratio=hidden / dim, qkv_bias="backbone.layers.0.blocks.0.attn.qkv.bias" in st,
        # Informative only: the released window-12 models were pretrained at 384 px.
        image_size=384 if window == 12 else 224,
    )


def _infer_resnet(st: dict[str, Tensor], shapes: _Shapes) -> ResNetConfig:
    if "backbone.stem.conv2.weight" in st:
        raise shapes.fail("ResNet with a deep (three-conv, 'R101c') stem is not supported")
    stem = shapes("backbone.stem.conv1.weight", "the ResNet stem width")
    depths = [_count(st, f"backbone.res{i}.") for i in range(2, 6)]
    widths = [shapes(f"backbone.res{i}.0.conv3.weight", "ResNet stage widths")[0] for i in range(2, 6)]
    for i, w in zip(range(2, 6), widths):
        mid = shapes(f"backbone.res{i}.0.conv2.weight", "ResNet bottleneck widths")
        if mid[0] != w // 4 or mid[1] != w // 4:
            raise shapes.fail(f"res{i} is not a plain bottleneck (3x3 conv {mid[:2]} for output {w}): ResNeXt "
                              "or other widths are not supported")
    return ResNetConfig(depths=depths, embedding_size=stem[0], hidden_sizes=widths)


def infer_config(state: dict[str, Tensor], source: str, id2label: Any = None,
                 original: Optional[dict[str, Tensor]] = None) -> Mask2FormerConfig:
    """The architecture that ``state`` (our names) was trained with, read from its shapes."""
    shapes = _Shapes(state, source)
    if "backbone.patch_embed.proj.weight" in state:
        backbone: Any = _infer_swin(state, shapes)
        _check_relative_position_index(original or {}, backbone.window_size, shapes)
    elif "backbone.stem.conv1.weight" in state:
        backbone = _infer_resnet(state, shapes)
    else:
        raise shapes.fail("backbone is neither Swin (backbone.patch_embed) nor ResNet (backbone.stem)")
    td, pd = "transformer_decoder.", "pixel_decoder."
    layers = _count(state, td + "transformer_self_attention_layers.")
    if layers == 0:
        raise shapes.fail("no sem_seg_head.predictor.transformer_self_attention_layers: not a Mask2Former "
                          "decoder (a MaskFormer checkpoint?)")
    num_classes = shapes(td + "class_embed.weight", "the number of classes")[0] - 1
    num_queries, hidden = shapes(td + "query_feat.weight", "the number of queries")
    mlp_layers = _count(state, td + "mask_embed.layers.")
    if mlp_layers != 3:
        raise shapes.fail(f"mask_embed has {mlp_layers} layers; Mask2Former uses 3")
    mask_dim = shapes(td + "mask_embed.layers.2.weight", "the mask dimension")[0]
    conv_dim = shapes(pd + "mask_features.weight", "the pixel decoder width")[1]
    levels = shapes(pd + "transformer.level_embed", "the number of feature levels")[0]
    if levels != 3:
        raise shapes.fail(f"the pixel decoder attends to {levels} levels; 3 (res3-res5) are supported")
    rows = shapes(pd + "transformer.encoder.layers.0.self_attn.attention_weights.weight", "the number of heads")[0]
    if rows % (levels * 4):
        raise shapes.fail(f"deformable attention_weights has {rows} rows, not heads x {levels} levels x 4 points")
    # FPN adapters are numbered from 1.
    num_fpn = max((int(m.group(1)) for k in state if (m := re.match(re.escape(pd) + r"adapter_(\d+)\.", k))), default=0)
    config = Mask2FormerConfig(
        backbone_config=backbone,
        id2label=(normalize_id2label(id2label, num_classes, source) if id2label is not None
                  else default_id2label(num_classes)),
        num_queries=num_queries,
        hidden_dim=hidden,
        feature_size=conv_dim,
        mask_feature_size=mask_dim,
        num_attention_heads=rows // (levels * 4),
        dim_feedforward=shapes(td + "transformer_ffn_layers.0.linear1.weight", "the decoder FFN width")[0],
        encoder_feedforward_dim=shapes(pd + "transformer.encoder.layers.0.linear1.weight", "the encoder FFN width")[0],
        encoder_layers=_count(state, pd + "transformer.encoder.layers."),
        decoder_layers=layers + 1,  # Hugging Face counts the prediction made before the first layer
        # Projections exist anyway when widths differ; only equal widths need the flag.
        enforce_input_projection=(td + "input_proj.0.weight") in state and conv_dim == hidden,
        # FPN levels run from stride 8 (the finest deformable level) down to common_stride.
        common_stride=8 >> num_fpn,
    )
    return config


def read_detectron2_checkpoint(path: str | os.PathLike, id2label: Any = None, **ignored: Any
                               ) -> tuple[Mask2FormerConfig, dict[str, Tensor]]:
    """(config inferred from the shapes, state dict under our names) of an original checkpoint.

    ``id2label`` (a mapping or a list of names) overrides the names picked by class count.
    Other keyword arguments (meant for the hub loader) are ignored.
    """
    source = os.fspath(path)
    original = read_original_state_dict(source)
    state = original_to_ours(original, source)
    return infer_config(state, source, id2label, original), state


__all__ = ["read_detectron2_checkpoint", "read_original_state_dict", "original_to_ours", "infer_config",
           "UnsafeCheckpointError"]
