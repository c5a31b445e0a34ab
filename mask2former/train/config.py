"""Training configuration: one typed dataclass, read from YAML and overridden by flags.

Defaults are the paper's recipe for semantic segmentation (Cityscapes-style): AdamW 1e-4,
weight decay 0.05, backbone lr x0.1, poly 0.9, full-model gradient clipping at 0.01.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

ARCHITECTURES = ("tiny", "swin-t", "swin-s", "swin-b", "swin-l", "r50", "r101")


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

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, not {self.architecture!r}")
        if self.on_nan not in ("stop", "skip"):
            raise ValueError("on_nan must be 'stop' or 'skip'")
        if self.task not in ("semantic", "instance", "panoptic"):
            raise ValueError("task must be semantic, instance or panoptic")
        if not self.data_root:
            raise ValueError("data_root is required")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        data = dict(data)
        if "crop_size" in data:
            c = data["crop_size"]
            data["crop_size"] = (int(c), int(c)) if isinstance(c, int) else tuple(int(v) for v in c)
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str) -> "TrainConfig":
        import yaml

        with open(path, encoding="utf-8") as f:
            return cls.from_dict(yaml.safe_load(f) or {})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_size"] = list(self.crop_size)
        return d
