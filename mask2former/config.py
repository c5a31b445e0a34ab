"""Typed configuration that reads and writes Hugging Face Mask2Former ``config.json`` files.

Field names follow the Hugging Face config so a ``config.json`` round-trips unchanged: keys we
do not model are kept in ``extra`` and written back as they were.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

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


class _BackboneFile:
    """``save_pretrained`` / ``from_pretrained`` of a backbone config alone; reading a whole
    Mask2Former ``config.json`` takes its ``backbone_config``."""

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike, **unused: Any) -> None:
        from .io import atomic_write_text

        os.makedirs(directory, exist_ok=True)
        atomic_write_text(os.path.join(directory, "config.json"), self.to_json_string())

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> Any:
        from .checkpoint.hub import resolve_file

        with open(resolve_file(name_or_path, "config.json", **hub_kwargs), encoding="utf-8") as f:
            data = json.load(f)
        if data.get("model_type") == "mask2former":
            data = data.get("backbone_config") or {}
        return cls.from_dict(data)


@dataclass
class SwinConfig(_BackboneFile):
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
class ResNetConfig(_BackboneFile):
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


class _SubConfigs:
    """transformers' ``config.sub_configs``: the backbone config's class (of this instance)."""

    def __get__(self, obj: Any, owner: type) -> dict[str, type]:
        return {"backbone_config": type(obj.backbone_config) if obj is not None else SwinConfig}


@dataclass
class _Mask2FormerFields:
    """The typed fields of :class:`Mask2FormerConfig` (Hugging Face names and defaults)."""

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
    use_auxiliary_loss: bool = True  # deep supervision: the loss covers every decoder prediction
    output_auxiliary_logits: Optional[bool] = None
    # Defaults of forward's output_hidden_states / output_attentions / return_dict.
    output_hidden_states: bool = False
    output_attentions: bool = False
    return_dict: bool = True
    model_type: str = "mask2former"
    extra: dict[str, Any] = field(default_factory=dict)


class Mask2FormerConfig(_Mask2FormerFields):
    """The whole network. ``decoder_layers`` counts predictions as Hugging Face does: the
    transformer decoder has ``decoder_layers - 1`` layers plus the prediction before the first.

    Accepts transformers' constructor arguments: the fields, their aliases (``hidden_size``,
    ``num_hidden_layers``), ``num_labels`` / ``label2id``, ``backbone_config`` as a dict or a
    config object; other keys are kept in ``extra`` and written back to ``config.json``.
    """

    def __init__(self, **kwargs: Any) -> None:
        aliases = {**type(self).attribute_map, "use_return_dict": "return_dict"}
        kwargs = {aliases.get(k, k): v for k, v in kwargs.items()}
        num_labels = kwargs.pop("num_labels", None)
        label2id = kwargs.pop("label2id", None)
        attn = kwargs.pop("attn_implementation", None)
        known, extra = _split_known(_Mask2FormerFields, kwargs)
        extra = {**known.pop("extra", {}), **extra}
        if "id2label" not in known:
            if label2id is not None:
                known["id2label"] = {int(i): str(label) for label, i in dict(label2id).items()}
            elif num_labels is not None:
                known["id2label"] = {i: f"LABEL_{i}" for i in range(int(num_labels))}
        super().__init__(**known, extra=extra)
        self._normalise()
        self._attn_implementation = attn

    # transformers' spellings of two fields.
    attribute_map = {"hidden_size": "hidden_dim", "num_hidden_layers": "decoder_layers"}

    def _normalise(self) -> None:
        if isinstance(self.backbone_config, dict):
            self.backbone_config = backbone_from_dict(self.backbone_config)
        elif not isinstance(self.backbone_config, (SwinConfig, ResNetConfig)):
            if self.backbone_config is None:
                self.backbone_config = _default_backbone()
            elif hasattr(self.backbone_config, "to_dict"):  # e.g. a transformers SwinConfig
                self.backbone_config = backbone_from_dict(self.backbone_config.to_dict())
            else:
                raise TypeError(f"backbone_config must be a dict or a config, not {type(self.backbone_config).__name__}")
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not attributes: aliases, then keys kept from config.json.
        if name in type(self).attribute_map:
            return getattr(self, type(self).attribute_map[name])
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        name = type(self).attribute_map.get(name, name)
        if name == "num_labels":
            self.id2label = {i: self.id2label.get(i, f"LABEL_{i}") for i in range(int(value))}
            return
        if name == "label2id":  # derived from id2label
            self.id2label = {int(i): str(label) for label, i in dict(value).items()}
            return
        if name == "use_return_dict":
            name = "return_dict"
        if name == "backbone_config" and "backbone_config" in self.__dict__ and not isinstance(value, (SwinConfig, ResNetConfig)):
            object.__setattr__(self, name, value)
            self._normalise()
            return
        if name not in _FIELD_NAMES and not name.startswith("_") and "extra" in self.__dict__ \
                and not hasattr(type(self), name):
            self.extra[name] = value  # a transformers key we do not model: kept for config.json
            return
        object.__setattr__(self, name, value)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    @property
    def _attn_implementation(self) -> str:
        """How the decoder's attention runs: "sdpa" (default, fused) or "eager" (the explicit
        softmax(QK^T)V, what ``output_attentions`` uses). Not written to ``config.json``."""
        return self.__dict__.get("_attn_implementation_internal") or "sdpa"

    @_attn_implementation.setter
    def _attn_implementation(self, value: Optional[str]) -> None:
        if value not in (None, "sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager'; got {value!r}")
        self.__dict__["_attn_implementation_internal"] = value

    # transformers' config API, for code and tests written against it.
    sub_configs = _SubConfigs()
    base_model_tp_plan = None  # no tensor-parallel plan

    def get_text_config(self, *args: Any, **kwargs: Any) -> "Mask2FormerConfig":
        return self

    def __iter__(self):
        return iter(self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask2FormerConfig) and self.to_dict() == other.to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "Mask2FormerConfig":
        data = {**data, **overrides}
        if data.get("model_type", "mask2former") != "mask2former":
            raise ValueError(f"not a Mask2Former config (model_type={data.get('model_type')!r})")
        return cls(**data)

    def to_diff_dict(self) -> dict[str, Any]:
        """``to_dict`` without the values a default config has (transformers' saved form)."""
        default = Mask2FormerConfig().to_dict()
        keep = {"model_type", "id2label", "label2id", "backbone_config"}
        return {k: v for k, v in self.to_dict().items() if k in keep or default.get(k, object()) != v}

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)

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

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike, use_diff: bool = True) -> None:
        from .io import atomic_write_text

        atomic_write_text(os.fspath(path), self.to_json_string())

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> "Mask2FormerConfig":
        """From a folder, a ``config.json`` path or a hub id; hub options (``subfolder``,
        ``revision``, ``cache_dir``, ...) go to the download, other keyword arguments
        override config values (e.g. ``num_labels=3``)."""
        from .checkpoint.hub import HUB_KWARGS, resolve_file

        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        kwargs.pop("return_unused_kwargs", None)
        path = os.fspath(name_or_path)
        if not (os.path.isfile(path) and path.endswith(".json")):
            path = resolve_file(name_or_path, "config.json", **hub_kwargs)
        cfg = cls.from_json_file(path)
        cfg.update(kwargs)
        return cfg

    def save_pretrained(self, directory: str | os.PathLike, **unused: Any) -> None:
        os.makedirs(directory, exist_ok=True)
        self.to_json_file(os.path.join(directory, "config.json"))


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(_Mask2FormerFields))
