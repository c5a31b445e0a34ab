"""Typed configuration that reads and writes Hugging Face Mask2Former ``config.json`` files.

Field names follow the Hugging Face config so a ``config.json`` round-trips unchanged: keys we
do not model are kept in ``extra`` and written back as they were.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Union

_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _split_known(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    return known, extra


def _to_dict(obj: Any) -> dict[str, Any]:
    out = dict(obj.extra)
    for f in dataclasses.fields(obj):
        if f.name == "extra":
            continue
        value = getattr(obj, f.name)
        out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
    return out


@dataclass
class SwinConfig:
    """Swin Transformer backbone (Liu et al. 2021) as Mask2Former uses it."""

    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    image_size: int = 224  # pretraining image size; informative only (no absolute position embedding)
    layer_norm_eps: float = 1e-5
    model_type: str = "swin"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SwinConfig":
        known, extra = _split_known(cls, data)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "num_channels": 3,
            "use_absolute_embeddings": False,
            "hidden_act": "gelu",
            "out_features": list(_STAGES),
            "hidden_size": self.channels[-1],
        }
        out.update(_to_dict(self))
        return out


@dataclass
class ResNetConfig:
    """Detectron2-style ResNet (stride in the 3x3 conv, frozen batch norm)."""

    depths: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    embedding_size: int = 64
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    model_type: str = "resnet"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        return list(self.hidden_sizes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResNetConfig":
        known, extra = _split_known(cls, data)
        if extra.get("layer_type", "bottleneck") != "bottleneck":
            raise ValueError("only bottleneck ResNets (ResNet-50/101/152) are supported")
        if extra.get("downsample_in_bottleneck"):
            raise ValueError("ResNet with the stride in the 1x1 conv is not what Mask2Former uses")
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "num_channels": 3,
            "layer_type": "bottleneck",
            "hidden_act": "relu",
            "downsample_in_first_stage": False,
            "downsample_in_bottleneck": False,
            "out_features": list(_STAGES),
        }
        out.update(_to_dict(self))
        return out


BackboneConfig = Union[SwinConfig, ResNetConfig]


def _default_backbone() -> SwinConfig:
    # The backbone Hugging Face's Mask2FormerConfig assumes when a config names none.
    return SwinConfig(depths=[2, 2, 18, 2])


def backbone_from_dict(data: dict[str, Any]) -> BackboneConfig:
    kind = data.get("model_type", "swin")
    if kind == "swin":
        return SwinConfig.from_dict(data)
    if kind == "resnet":
        return ResNetConfig.from_dict(data)
    raise ValueError(f"unsupported backbone model_type {kind!r} (expected 'swin' or 'resnet')")


@dataclass
class Mask2FormerConfig:
    """The whole network. ``decoder_layers`` counts predictions as Hugging Face does: the
    transformer decoder has ``decoder_layers - 1`` layers plus the prediction before the first."""

    backbone_config: BackboneConfig = field(default_factory=_default_backbone)
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    num_queries: int = 100
    hidden_dim: int = 256
    feature_size: int = 256
    mask_feature_size: int = 256
    num_attention_heads: int = 8
    dim_feedforward: int = 2048
    encoder_feedforward_dim: int = 1024
    encoder_layers: int = 6
    decoder_layers: int = 10
    pre_norm: bool = False
    enforce_input_projection: bool = False
    common_stride: int = 4
    dropout: float = 0.0
    ignore_value: int = 255
    no_object_weight: float = 0.1
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    model_type: str = "mask2former"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Mask2FormerConfig":
        data = dict(data)
        if data.get("model_type", "mask2former") != "mask2former":
            raise ValueError(f"not a Mask2Former config (model_type={data.get('model_type')!r})")
        backbone = data.pop("backbone_config", None)
        data.pop("label2id", None)  # derived from id2label
        known, extra = _split_known(cls, data)
        if "id2label" in known:
            known["id2label"] = {int(k): v for k, v in known["id2label"].items()}
        elif "num_labels" in extra:
            known["id2label"] = {i: f"LABEL_{i}" for i in range(int(extra.pop("num_labels")))}
        cfg = cls(**known, extra=extra)
        if backbone is not None:
            cfg.backbone_config = backbone_from_dict(backbone)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architectures": ["Mask2FormerForUniversalSegmentation"]}
        out.update(_to_dict(self))
        out["id2label"] = {str(k): v for k, v in sorted(self.id2label.items())}
        out["label2id"] = {v: k for k, v in sorted(self.id2label.items())}
        out.setdefault("feature_strides", [4, 8, 16, 32])
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "Mask2FormerConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> "Mask2FormerConfig":
        from .checkpoint.hub import resolve_file

        return cls.from_json_file(resolve_file(name_or_path, "config.json", **hub_kwargs))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        from .io import atomic_write_text

        os.makedirs(directory, exist_ok=True)
        atomic_write_text(os.path.join(directory, "config.json"), self.to_json_string())
