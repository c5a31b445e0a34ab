"""Backbones: each returns four feature maps at strides 4, 8, 16, 32 (``res2``..``res5``)."""
from __future__ import annotations

from torch import nn

from ..config import BackboneConfig, ResNetConfig, SwinConfig
from .resnet import ResNet
from .swin import SwinTransformer


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    if isinstance(cfg, SwinConfig):
        return SwinTransformer(cfg)
    if isinstance(cfg, ResNetConfig):
        return ResNet(cfg)
    raise TypeError(f"unknown backbone config {type(cfg).__name__}")


__all__ = ["build_backbone", "ResNet", "SwinTransformer"]
