"""Gradient checkpointing: backbone stages and decoder layers keep no activations in the
forward pass and recompute them during backward (``torch.utils.checkpoint``, non-reentrant,
RNG state preserved, so the loss and the gradients are those of the plain model).

Switched per module by giving the instance a checkpointed ``forward``: parameter names,
state dicts and the modules' own code stay as they are.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn


def checkpoint_units(model: nn.Module) -> list[nn.Module]:
    """The modules run under checkpointing: backbone stages, deformable encoder layers and
    the transformer decoder's attention and feed-forward layers."""
    backbone = model.backbone
    stages = [getattr(backbone, n) for n in backbone.stage_names] if hasattr(backbone, "stage_names") \
        else list(backbone.layers)
    decoder = model.transformer_decoder
    return [
        *stages,
        *model.pixel_decoder.transformer.encoder.layers,
        *decoder.transformer_cross_attention_layers,
        *decoder.transformer_self_attention_layers,
        *decoder.transformer_ffn_layers,
    ]


class _CheckpointedForward:
    """A module's checkpointed ``forward``. An object holding the module (not a closure over
    its bound method), so that ``copy.deepcopy`` and pickling of the model carry it over to the
    copy's own module."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = type(self.module).forward.__get__(self.module)
        # A list argument collects side outputs (attention weights): recomputing would add
        # them twice, so such a call runs plainly, as does everything without gradients.
        if not torch.is_grad_enabled() or any(isinstance(a, list) for a in args):
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    for module in checkpoint_units(model):
        if enabled and "forward" not in module.__dict__:
            module.forward = _CheckpointedForward(module)
        elif not enabled:
            module.__dict__.pop("forward", None)


def is_gradient_checkpointing(model: nn.Module) -> bool:
    return any("forward" in m.__dict__ for m in checkpoint_units(model))
