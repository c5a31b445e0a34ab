"""ResNet backbone as detectron2 builds it for Mask2Former: a 7x7 stem with max-pool,
bottleneck blocks with the stride in the 3x3 conv, and frozen batch norm everywhere.
Parameter names follow detectron2 (``stem.conv1``, ``res2.0.conv1.norm``...)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ResNetConfig
from ..layers import NormConv2d


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (detectron2's FrozenBN).

    Computed as the original computes it, so that logits are bit-identical: ``F.batch_norm``
    when no gradient is needed (inference), the folded ``x * scale + shift`` otherwise."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if not x.requires_grad:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


def ConvNorm(cin: int, cout: int, k: int, stride: int = 1) -> NormConv2d:
    """Bias-free conv followed by frozen BN, stored as ``conv.weight`` + ``conv.norm.*``."""
    return NormConv2d(cin, cout, k, FrozenBatchNorm2d(cout), stride=stride)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        mid = cout // 4
        self.shortcut = ConvNorm(cin, cout, 1, stride) if cin != cout or stride != 1 else None
        self.conv1 = ConvNorm(cin, mid, 1)
        self.conv2 = ConvNorm(mid, mid, 3, stride)
        self.conv3 = ConvNorm(mid, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class Stem(nn.Module):
    def __init__(self, cout: int):
        super().__init__()
        self.conv1 = ConvNorm(3, cout, 7, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """Returns ``res2``..``res5`` at strides 4, 8, 16, 32."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.stem = Stem(cfg.embedding_size)
        cin = cfg.embedding_size
        self.stage_names = []
        for i, (depth, cout) in enumerate(zip(cfg.depths, cfg.hidden_sizes)):
            blocks = [Bottleneck(cin if j == 0 else cout, cout, 2 if (j == 0 and i > 0) else 1) for j in range(depth)]
            self.add_module(f"res{i + 2}", nn.Sequential(*blocks))
            self.stage_names.append(f"res{i + 2}")
            cin = cout
        self.channels = list(cfg.hidden_sizes)
        self.strides = [4, 8, 16, 32]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (B, 3, H, W) -> [(B, C_i, H/2^(i+2), W/2^(i+2)) for i in 0..3]."""
        x = self.stem(x)
        outs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs
