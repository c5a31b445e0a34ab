"""The paper's optimisation: AdamW, backbone learning rate x0.1, no weight decay on norms,
embeddings and Swin's relative position tables, poly schedule with optional warm-up."""
from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_multiplier: float) -> list[dict]:
    """One group per parameter with its own lr / weight decay, as detectron2's
    ``get_default_optimizer_params`` builds them (then merged by equal settings)."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            p_lr = lr * backbone_multiplier if module_name.startswith("backbone") else lr
            decay = weight_decay
            if isinstance(module, NO_DECAY_TYPES) or "relative_position_bias_table" in name \
                    or "absolute_pos_embed" in name:
                decay = 0.0
            groups.setdefault((p_lr, decay), []).append(p)
    return [{"params": ps, "lr": g_lr, "initial_lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def build_optimizer(model: nn.Module, lr: float = 1e-4, weight_decay: float = 0.05,
                    backbone_multiplier: float = 0.1) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, backbone_multiplier), lr=lr)


def poly_factor(it: int, max_iter: int, power: float = 0.9, warmup_iters: int = 0,
                warmup_factor: float = 1.0) -> float:
    """detectron2's WarmupPolyLR multiplier at iteration ``it`` (linear warm-up)."""
    warm = 1.0
    if it < warmup_iters:
        alpha = it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    return warm * math.pow(max(0.0, 1.0 - it / max_iter), power)


def build_scheduler(optimizer: torch.optim.Optimizer, max_iter: int, power: float = 0.9, warmup_iters: int = 0,
                    warmup_factor: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: poly_factor(it, max_iter, power, warmup_iters, warmup_factor))


def clip_full_model(params, max_norm: float) -> torch.Tensor:
    """Clip the gradient norm of all parameters together (``CLIP_TYPE: full_model``)."""
    return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
