"""Point sampling used by the matcher and the loss.

Mask2Former never compares whole masks: it reads predictions and targets at a few thousand
points given in normalised [0, 1] x [0, 1] coordinates. Because the coordinates are
resolution-free, a 1/4-resolution prediction and a full-resolution target can be read at the
same places without resizing either one (PointRend, Kirillov et al. 2020).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(features: Tensor, coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinearly read ``features`` at ``coords``.

    features: (N, C, H, W). coords: (N, P, 2) or (N, Hg, Wg, 2), (x, y) in [0, 1].
    Returns (N, C, P) or (N, C, Hg, Wg). Points outside the map read as zero.
    """
    flat = coords.dim() == 3
    grid = coords.unsqueeze(2) if flat else coords
    # grid_sample wants [-1, 1] and the grid in the same dtype as the input.
    grid = grid.to(features.dtype) * 2.0 - 1.0
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    return out.squeeze(3) if flat else out


def mask_uncertainty(logits: Tensor) -> Tensor:
    """Higher where a binary mask logit is closer to the 0 decision boundary."""
    return -logits.abs()


def random_points(
    n: int, num_points: int, device: torch.device, generator: Optional[torch.Generator] = None
) -> Tensor:
    """(n, num_points, 2) uniform coordinates in [0, 1).

    Every random draw of this package goes through ``torch.rand`` here, looked up at call time,
    so a test can swap ``torch.rand`` and drive ours and a reference implementation alike.
    """
    return torch.rand(n, num_points, 2, device=device, generator=generator)


@torch.no_grad()
def uncertain_point_coords(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    uncertainty_fn: Callable[[Tensor], Tensor] = mask_uncertainty,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Pick ``num_points`` points per mask, biased towards uncertain ones.

    Draws ``num_points * oversample_ratio`` uniform candidates, keeps the
    ``importance_sample_ratio * num_points`` most uncertain of them and fills the rest with
    fresh uniform points, so the loss focuses on boundaries without ignoring the interior.

    logits: (R, 1, H, W) mask logits. Returns (R, num_points, 2) coordinates in [0, 1].
    ``generator`` (optional) must live on ``logits.device``.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    num_masks = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain

    candidates = random_points(num_masks, num_candidates, logits.device, generator)
    scores = uncertainty_fn(point_sample(logits, candidates))[:, 0]  # (R, num_candidates)
    top = scores.topk(num_uncertain, dim=1).indices  # (R, num_uncertain)
    chosen = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        chosen = torch.cat([chosen, random_points(num_masks, num_random, logits.device, generator)], dim=1)
    return chosen
