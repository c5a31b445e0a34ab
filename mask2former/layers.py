"""Small building blocks shared by several components."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def autocast_inference(x: Tensor) -> bool:
    """Inference under autocast (the bf16 / fp16 modes), where exact fp32 bits are gone anyway,
    so layouts and kernels may be chosen for speed alone."""
    if torch.is_grad_enabled():
        return False
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4 takes no device
        return torch.is_autocast_cpu_enabled() if x.device.type == "cpu" else torch.is_autocast_enabled()


def inexact_inference(module: nn.Module, x: Tensor) -> bool:
    """The one switch of the inexact fast forms (the deformable attention's ``embedding_bag``
    sampling, the decoder's one mask for all heads, Swin's larger attention steps): on under
    autocast inference, and in a model marked by :func:`allow_inexact` (the int8 mode's copy).
    Exact fp32 inference never takes them: they change float rounding, hence bits."""
    return module.inexact or autocast_inference(x)


def allow_inexact(model: nn.Module, on: bool = True) -> nn.Module:
    """Sets ``inexact`` on every component of ``model`` that has an inexact fast form (a
    class attribute ``inexact``); returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"allow_inexact takes a torch.nn.Module, not {type(model).__name__}")
    for m in model.modules():
        if hasattr(type(m), "inexact"):
            m.inexact = on
    return model


def inexact_components(model: nn.Module) -> list[nn.Module]:
    """The components of ``model`` marked inexact."""
    return [m for m in model.modules() if getattr(m, "inexact", False)]


class NormConv2d(nn.Conv2d):
    """Conv -> norm -> optional ReLU, stored as ``weight`` + ``norm.*`` like detectron2's Conv2d,
    so checkpoints of the original load under their own names."""

    def __init__(self, cin: int, cout: int, k: int, norm: Optional[nn.Module], stride: int = 1,
                 bias: bool = False, relu: bool = False):
        super().__init__(cin, cout, k, stride=stride, padding=k // 2, bias=bias)
        self.norm = norm
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class MLP(nn.Module):
    """Linear layers with ReLU between them (not after the last)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, num_layers: int):
        super().__init__()
        dims = [dim_in] + [hidden] * (num_layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
