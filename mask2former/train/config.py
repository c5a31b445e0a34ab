"""Training configuration: one typed dataclass, read from YAML and overridden by flags.

Defaults are the paper's recipe for semantic segmentation (Cityscapes-style): AdamW 1e-4,
weight decay 0.05, backbone lr x0.1, poly 0.9, full-model gradient clipping at 0.01.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

ARCHITECTURES = ("tiny", "swin-t", "swin-s", "swin-b", "swin-l", "r50", "r101")
DATASETS = ("folder", "cityscapes", "cityscapes_panoptic", "cityscapes_instance", "coco_panoptic",
            "coco_instance", "ade20k")
TASKS = ("semantic", "instance", "panoptic")


@dataclass
class TrainConfig:
    # data
    dataset: str = "folder"  # folder, cityscapes, cityscapes_panoptic, cityscapes_instance, coco_panoptic, coco_instance, ade20k
    data_root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    task: str = "semantic"  # semantic, instance or panoptic targets
    crop_size: tuple[int, int] = (512, 1024)
    base_size: int = 1024  # shortest edge the random scale (0.5x-2.0x) is relative to
    max_size: int = 4096
    color_aug: bool = True
    num_workers: int = 2
    check_data: bool = False  # read every training image before starting (a sample is always checked)
    # model
    init: Optional[str] = None  # HF folder / hub id / .pkl to start from
    architecture: str = "swin-t"  # when not starting from a checkpoint
    backbone_weights: Optional[str] = None  # bare backbone checkpoint (timm/original Swin or torchvision/d2 ResNet)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # Mask2FormerConfig fields
    # optimisation
    iterations: int = 90000
    batch_size: int = 16  # global, across all processes
    accumulate: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    backbone_multiplier: float = 0.1
    poly_power: float = 0.9
    warmup_iters: int = 0
    clip_grad: float = 0.01
    amp: bool = True  # on GPU only
    on_nan: str = "stop"  # stop or skip
    # bookkeeping
    output_dir: str = "output"
    checkpoint_period: int = 1000
    eval_period: int = 5000
    log_period: int = 20
    seed: int = 0
    device: Optional[str] = None
    memory_check: bool = True  # refuse a configuration whose estimated memory exceeds what is free

    def validate(self) -> None:
        for name, allowed in (("architecture", ARCHITECTURES), ("dataset", DATASETS), ("task", TASKS),
                              ("on_nan", ("stop", "skip"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if not self.data_root:
            raise ValueError("data_root is required (--data-root)")
        for name in ("iterations", "batch_size", "accumulate", "base_size", "max_size", "checkpoint_period",
                     "log_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("num_workers", "eval_period", "warmup_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 32:
            raise ValueError(f"crop_size must be two sizes of at least 32 pixels (H W), not {list(self.crop_size)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Fields from a mapping (YAML, ``--set``); a value of the wrong type is a ValueError
        naming the field and the type it needs."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)} (known: {', '.join(names)})")
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str) -> "TrainConfig":
        data = read_config_file(path)
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_size"] = list(self.crop_size)
        return d


def read_config_file(path: str) -> dict[str, Any]:
    """The TrainConfig fields of a YAML file; unreadable or malformed files are one line naming it."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise OSError(f"{path}: cannot read training config ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(data).__name__}")
    return data


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """``value`` as the field's type: numbers from strings (YAML reads ``1e-4`` as a string),
    ``crop_size`` from one size or two; anything else that does not fit is a one-line error."""
    optional = typing.get_origin(kind) is typing.Union and type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    origin = typing.get_origin(kind) or kind

    def wrong(expected: str) -> ValueError:
        return ValueError(f"training option {name}: expected {expected}, got {value!r}")

    if name == "crop_size":
        sizes = [value] if isinstance(value, (int, str)) else value
        if not isinstance(sizes, (list, tuple)) or len(sizes) not in (1, 2):
            raise wrong("one size or two (H W)")
        try:
            sizes = [int(v) for v in sizes if not isinstance(v, bool)]
        except (TypeError, ValueError):
            raise wrong("integer sizes") from None
        return (sizes[0], sizes[-1])
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise wrong("true or false")
    if kind in (int, float):
        if isinstance(value, bool):
            raise wrong("an integer" if kind is int else "a number")
        try:
            number = float(value) if kind is float else int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise wrong("an integer" if kind is int else "a number")
        return number
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise wrong("a string")
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong("a mapping, e.g. {num_queries: 50}")
        return value
    return value


FIELD_HELP = {
    "dataset": "dataset format: " + ", ".join(DATASETS) + " (folder: see docs/training.md)",
    "data_root": "dataset folder",
    "train_split": "split to train on",
    "val_split": "split evaluated every eval_period iterations (skipped when missing)",
    "task": "targets to train for: " + ", ".join(TASKS),
    "crop_size": "training crop H W (one value: square)",
    "base_size": "shortest edge the random 0.5x-2.0x rescale is relative to; also the exported model's test size",
    "max_size": "longest edge after rescaling",
    "color_aug": "photometric jitter (the original's ColorAugSSD)",
    "num_workers": "DataLoader worker processes (0: load in the main process)",
    "check_data": "read and check every training image and label before starting (a sample is always checked)",
    "init": "start from this checkpoint (HF folder, hub id or .pkl); the class head is re-initialised when the "
            "class count differs",
    "architecture": "network when not starting from --init: " + ", ".join(ARCHITECTURES)
                    + " (tiny: a 2.7M-parameter Swin for CPU experiments and tests)",
    "backbone_weights": "bare backbone checkpoint (original/timm Swin, torchvision/detectron2 ResNet)",
    "model_overrides": "Mask2FormerConfig fields, e.g. {num_queries: 50, backbone: {drop_path_rate: 0.2}}",
    "iterations": "optimiser steps",
    "batch_size": "images per step, across all processes",
    "accumulate": "split each step into this many micro-batches (same result, less memory)",
    "lr": "AdamW learning rate (the backbone gets lr x backbone_multiplier)",
    "weight_decay": "AdamW weight decay (none on norms, embeddings, position tables)",
    "backbone_multiplier": "backbone learning-rate factor",
    "poly_power": "poly schedule power",
    "warmup_iters": "linear warm-up iterations",
    "clip_grad": "full-model gradient-norm clip (0: off)",
    "amp": "float16 mixed precision (GPU only)",
    "on_nan": "on a NaN/inf loss: stop, or skip the step",
    "output_dir": "checkpoints, metrics.jsonl, train_config.json and the final model/",
    "checkpoint_period": "save last_checkpoint.pth every N iterations",
    "eval_period": "evaluate on val_split every N iterations and at the end (0: never)",
    "log_period": "append losses to metrics.jsonl every N iterations",
    "seed": "random seed (data order, augmentation, initialisation)",
    "device": "cpu, cuda, cuda:N or mps",
    "memory_check": "refuse to start when the estimated memory exceeds what is free",
}
