"""Mask2Former: backbone -> pixel decoder -> masked-attention transformer decoder."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .backbone import build_backbone
from .config import Mask2FormerConfig
from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import MultiScaleMaskedTransformerDecoder


@dataclass
class Mask2FormerOutput:
    """What the network predicts; readable as attributes or as a mapping, like transformers'.

    class_queries_logits: (B, Q, K+1); masks_queries_logits: (B, Q, H/4, W/4) of the final
    layer. auxiliary_logits: the same pair for every earlier prediction (first = before any
    decoder layer). pixel_mask: (B, H, W) valid region of each padded input, kept so that
    post-processing can crop away padding.
    """

    class_queries_logits: Tensor
    masks_queries_logits: Tensor
    auxiliary_logits: list[dict[str, Tensor]] = field(default_factory=list)
    pixel_mask: Optional[Tensor] = None
    loss: Optional[Tensor] = None
    loss_dict: Optional[dict[str, Tensor]] = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


class Mask2FormerForUniversalSegmentation(nn.Module):
    """The whole network. ``pixel_values`` are normalised images (the processor's output)."""

    def __init__(self, config: Mask2FormerConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone_config)
        self.pixel_decoder = MSDeformAttnPixelDecoder(self.backbone.channels, self.backbone.strides, config)
        self.transformer_decoder = MultiScaleMaskedTransformerDecoder(config.feature_size, config)
        self.criterion: Optional[nn.Module] = None  # set by training code when losses are wanted

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(
        self,
        pixel_values: Tensor,
        pixel_mask: Optional[Tensor] = None,
        mask_labels: Optional[list[Tensor]] = None,
        class_labels: Optional[list[Tensor]] = None,
        point_generators: Optional[list[torch.Generator]] = None,
        **unused: Any,
    ) -> Mask2FormerOutput:
        """pixel_values: (B, 3, H, W); pixel_mask: (B, H, W), 1 on real pixels, 0 on padding.

        As in the original network, padding is not masked inside the model: an image padded
        in a batch gets slightly different logits than alone. ``pixel_mask`` travels to the
        output for post-processing. With ``mask_labels``/``class_labels`` and a criterion,
        the loss is computed too (``point_generators``: one RNG per image for the loss's
        random points, so the loss does not depend on how images were batched).
        """
        features = self.backbone(pixel_values)
        mask_features, multi_scale = self.pixel_decoder(features)
        classes, masks = self.transformer_decoder(multi_scale, mask_features)
        aux = [{"class_queries_logits": c, "masks_queries_logits": m} for c, m in zip(classes[:-1], masks[:-1])]
        out = Mask2FormerOutput(classes[-1], masks[-1], aux, pixel_mask)
        if mask_labels is not None and class_labels is not None:
            if self.criterion is None:
                raise ValueError("labels were given but the model has no criterion; use build_criterion()")
            targets = [{"labels": c, "masks": m} for c, m in zip(class_labels, mask_labels)]
            out.loss_dict = self.criterion(out.class_queries_logits, out.masks_queries_logits, aux, targets,
                                           generator=point_generators)
            out.loss = out.loss_dict["loss"]
        return out

    # -- checkpoints ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, strict: bool = True, **kwargs: Any
                        ) -> "Mask2FormerForUniversalSegmentation":
        """Load a Hugging Face folder or hub id, or an original detectron2 ``.pkl``.

        ``kwargs`` go to the ``.pkl`` loader (e.g. ``id2label``) or to ``huggingface_hub``
        (e.g. ``revision``, ``cache_dir``, ``local_files_only``).
        """
        from .checkpoint import load_model

        return load_model(name_or_path, strict=strict, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` that both this package and
        ``transformers`` load."""
        from .checkpoint.hf import save_hf_weights

        os.makedirs(directory, exist_ok=True)
        self.config.save_pretrained(directory)
        save_hf_weights(self, directory, self.config.no_object_weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(config: Mask2FormerConfig) -> Mask2FormerForUniversalSegmentation:
    return Mask2FormerForUniversalSegmentation(config)
