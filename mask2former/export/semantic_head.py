"""The semantic post-processing as part of the graph: pixel values in, label map out.

It is :func:`mask2former.postprocess.semantic_segmentation` as ``Segmenter`` runs it for
semantic models (``resize_before_inference=False``, the original's semantic inference): class
probabilities without "no object" times mask probabilities, combined at the padded input
size; the valid (unpadded) region cropped; the class maps resized bilinearly to the target
size; argmax (ties: the lower class id). Panoptic and instance inference stay in Python
(they select and merge a variable number of segments per image).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .torch_export import LogitsModule


class SemanticSegmentationModule(nn.Module):
    """forward(pixel_values (B, 3, Hp, Wp), valid_size (2,) int64 [h, w] of the unpadded image
    in the top-left corner, target_size (2,) int64 [H, W] of the output) -> labels (B, H, W)
    int64. One valid and target size for the whole batch (images of one size)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.logits = LogitsModule(model)

    def forward(self, pixel_values: Tensor, valid_size: Tensor, target_size: Tensor) -> Tensor:
        classes, masks = self.logits(pixel_values)  # (B, Q, K+1), (B, Q, Hp/4, Wp/4)
        hp, wp = pixel_values.shape[-2:]
        probs = F.softmax(classes.float(), dim=-1)[..., :-1]
        masks = F.interpolate(masks.float(), size=(hp, wp), mode="bilinear", align_corners=False).sigmoid()
        scores = torch.einsum("bqc,bqhw->bchw", probs, masks)  # (B, K, Hp, Wp)
        vh, vw, th, tw = (v.item() for v in (valid_size[0], valid_size[1], target_size[0], target_size[1]))
        for v, limit in ((vh, hp), (vw, wp)):
            torch._check(v >= 1)
            torch._check(v <= limit)
        for v in (th, tw):
            torch._check(v >= 1)
        scores = scores[:, :, :vh, :vw]
        scores = F.interpolate(scores, size=(th, tw), mode="bilinear", align_corners=False)
        return scores.argmax(1)
