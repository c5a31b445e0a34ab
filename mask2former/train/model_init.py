"""Building the network to train: from a named architecture, from any checkpoint we load
(re-initialising the class head when the class count differs), or with a bare backbone."""
from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import nn

from .. import distributed as dist_utils
from ..config import Mask2FormerConfig, ResNetConfig, SwinConfig
from ..model import Mask2FormerForUniversalSegmentation

SWIN = {
    "swin-t": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin-s": dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin-b": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, image_size=384),
    "swin-l": dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, image_size=384),
    # A reduced model that trains on a CPU in minutes (tests, the bundled demo model).
    "tiny": dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7, drop_path_rate=0.1),
}
TINY_HEAD = dict(num_queries=16, hidden_dim=64, feature_size=64, mask_feature_size=64, dim_feedforward=256,
                 encoder_feedforward_dim=256, encoder_layers=2, decoder_layers=4, train_num_points=1024)


def architecture_config(name: str, id2label: dict[int, str], overrides: dict[str, Any]) -> Mask2FormerConfig:
    """A named architecture; ``overrides`` sets Mask2FormerConfig fields, and its ``backbone``
    entry (a dict) sets backbone fields, e.g. ``{"backbone": {"drop_path_rate": 0.0}}``."""
    overrides = dict(overrides)
    backbone_overrides = overrides.pop("backbone", {})
    if name in SWIN:
        backbone: Any = SwinConfig(**{**SWIN[name], **backbone_overrides})
    elif name in ("r50", "r101"):
        backbone = ResNetConfig(depths=[3, 4, 6, 3] if name == "r50" else [3, 4, 23, 3], **backbone_overrides)
    else:
        raise ValueError(f"unknown architecture {name!r}")
    head = dict(TINY_HEAD) if name == "tiny" else {}
    head.update(overrides)
    return Mask2FormerConfig(backbone_config=backbone, id2label=dict(id2label), **head)


def reset_class_head(model: Mask2FormerForUniversalSegmentation, id2label: dict[int, str]) -> None:
    """Give the model a fresh classifier for a new label set (the mask head is kept)."""
    model.config.id2label = dict(id2label)
    old = model.transformer_decoder.class_embed
    model.transformer_decoder.class_embed = nn.Linear(old.in_features, len(id2label) + 1).to(old.weight.device)


def load_backbone_weights(model: Mask2FormerForUniversalSegmentation, path: str) -> None:
    """Load a bare backbone checkpoint (original Swin release / detectron2 ResNet names, with or
    without a ``backbone.`` prefix; a ``model`` or ``state_dict`` entry is unwrapped)."""
    if path.endswith(".pkl"):
        from ..checkpoint.detectron2 import read_original_state_dict

        state = read_original_state_dict(path)
    elif path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k[len("backbone."):] if k.startswith("backbone.") else k: torch.as_tensor(v) for k, v in state.items()}
    own = model.backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < 0.9 * len(own):
        raise ValueError(f"{path}: only {len(usable)} of the backbone's {len(own)} tensors match; "
                         "is it a checkpoint of this backbone?")
    model.backbone.load_state_dict(usable, strict=False)


def build_train_model(arch: str, init: str | None, backbone_weights: str | None, id2label: dict[int, str],
                      overrides: dict[str, Any]) -> Mask2FormerForUniversalSegmentation:
    if init:
        model = Mask2FormerForUniversalSegmentation.from_pretrained(init)
        if model.config.num_labels != len(id2label):
            if dist_utils.is_main():
                print(f"--init {init}: the checkpoint has {model.config.num_labels} classes, the dataset "
                      f"{len(id2label)}: the class head is re-initialised (the rest of the network is kept)",
                      file=sys.stderr)
            reset_class_head(model, id2label)
        else:
            model.config.id2label = dict(id2label)
    else:
        model = Mask2FormerForUniversalSegmentation(architecture_config(arch, id2label, overrides))
        if backbone_weights:
            if not os.path.isfile(backbone_weights):
                raise FileNotFoundError(f"{backbone_weights}: backbone checkpoint not found")
            load_backbone_weights(model, backbone_weights)
    return model.train()
