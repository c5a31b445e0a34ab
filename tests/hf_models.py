"""Random-weight reference models built with ``transformers`` (a test-only dependency)."""
from __future__ import annotations

import os
from typing import Any

import torch

SMALL_SWIN = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7, drop_path_rate=0.1)
SWIN_L = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, image_size=384,
              drop_path_rate=0.3)
SMALL_HEAD = dict(num_queries=12, decoder_layers=4, encoder_layers=2, hidden_dim=64, feature_size=64,
                  mask_feature_size=64, dim_feedforward=128, encoder_feedforward_dim=128)


def hf_model(backbone: str = "swin", backbone_kwargs: dict[str, Any] | None = None, num_labels: int = 7,
             seed: int = 0, **head: Any):
    """A transformers Mask2Former with random weights, in eval mode."""
    import transformers

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "swin":
        bb = transformers.SwinConfig(out_features=stages, **(backbone_kwargs or SMALL_SWIN))
    else:
        bb = transformers.ResNetConfig(out_features=stages, **(backbone_kwargs or {}))
    cfg = transformers.Mask2FormerConfig(backbone_config=bb, num_labels=num_labels,
                                         id2label={i: f"class_{i}" for i in range(num_labels)}, **head)
    torch.manual_seed(seed)
    model = transformers.Mask2FormerForUniversalSegmentation(cfg).eval()
    # Spread the mask embedding so that masked attention really masks part of each map.
    with torch.no_grad():
        for p in model.model.transformer_module.decoder.mask_predictor.parameters():
            p.mul_(3.0)
    return model


def save_hf(model, folder: str | os.PathLike) -> str:
    model.save_pretrained(folder)
    return os.fspath(folder)


def hf_forward(model, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None):
    with torch.no_grad():
        return model(pixel_values=pixel_values, pixel_mask=pixel_mask, output_auxiliary_logits=True)
