"""Bipartite (Hungarian) matching between queries and ground-truth masks.

Each ground-truth segment is assigned to exactly one query; the rest are trained towards
"no object". The cost mixes class probability with mask BCE and dice, the latter two measured
at random points rather than every pixel to keep matching cheap (Mask2Former, Sec. 3.3).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .point_sampling import point_sample, random_points

Indices = list[tuple[Tensor, Tensor]]


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean BCE-with-logits between every prediction and every target.

    logits: (Q, P), targets: (N, P) in [0, 1]. Returns (Q, N).
    BCE(x, t) = softplus(x) - x * t, so the whole matrix is one matmul plus a row constant.
    """
    num_points = logits.shape[1]
    row = F.softplus(logits).sum(1, keepdim=True)
    return (row - logits @ targets.T) / num_points


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss (with +1 smoothing) between every prediction and every target.

    logits: (Q, P), targets: (N, P). Returns (Q, N).
    """
    probs = logits.sigmoid()
    overlap = 2.0 * probs @ targets.T
    total = probs.sum(1)[:, None] + targets.sum(1)[None, :]
    return 1.0 - (overlap + 1.0) / (total + 1.0)


def _full_precision(x: Tensor) -> Tensor:
    # Costs in half precision can tie or overflow; the reference computes them in float32.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class HungarianMatcher(nn.Module):
    """Assigns targets to queries by minimising a weighted class + mask + dice cost.

    The mask terms use ``num_points`` points drawn uniformly at random, the same points for all
    predictions and targets of one image (fresh points per image and per call).
    """

    def __init__(
        self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("at least one matching cost must be non-zero")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self, class_logits: Tensor, mask_logits: Tensor, labels: Tensor, masks: Tensor, coords: Tensor
    ) -> Tensor:
        """Matching cost for one image.

        class_logits: (Q, C+1), mask_logits: (Q, H, W), labels: (N,), masks: (N, H', W'),
        coords: (1, P, 2) points shared by all masks. Returns (Q, N).
        """
        class_logits = _full_precision(class_logits)
        mask_logits = _full_precision(mask_logits)
        # -p[class] instead of the NLL: bounded, so it does not swamp the mask terms.
        cost_class = -class_logits.softmax(-1)[:, labels]

        num_queries, num_targets = mask_logits.shape[0], masks.shape[0]
        pred = point_sample(mask_logits[:, None], coords.expand(num_queries, -1, -1))[:, 0]  # (Q, P)
        tgt = point_sample(masks[:, None].to(mask_logits), coords.expand(num_targets, -1, -1))[:, 0]
        return (
            self.cost_class * cost_class
            + self.cost_mask * pairwise_sigmoid_bce(pred, tgt)
            + self.cost_dice * pairwise_dice(pred, tgt)
        )

    @torch.no_grad()
    def forward(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        targets: Sequence[dict[str, Tensor]],
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
    ) -> Indices:
        """Match each image's targets to queries. ``generator``: one for the batch, or one per
        image (then an image's points do not depend on which images share its batch).

        class_logits: (B, Q, C+1), mask_logits: (B, Q, H, W); targets[b] has "labels" (N,) and
        "masks" (N, H', W'). Returns, per image, (query_indices, target_indices) as CPU int64
        tensors of length min(Q, N), query indices ascending.
        """
        from scipy.optimize import linear_sum_assignment  # scipy is only needed for training

        # Pad targets to the batch maximum, as the loss does, so that a normalised point means
        # the same pixel in both when images of the batch were padded to a common size.
        height = max((t["masks"].shape[-2] for t in targets), default=0)
        width = max((t["masks"].shape[-1] for t in targets), default=0)
        indices: Indices = []
        for b, target in enumerate(targets):
            labels = target["labels"]
            if labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            gen = generator[b] if isinstance(generator, (list, tuple)) else generator
            coords = random_points(1, self.num_points, mask_logits.device, gen)
            masks = target["masks"]
            masks = F.pad(masks.to(mask_logits), (0, width - masks.shape[-1], 0, height - masks.shape[-2]))
            cost = self.cost_matrix(class_logits[b], mask_logits[b], labels, masks, coords)
            cost = cost.double().cpu()
            # A diverged model can give NaN/inf; push those pairs last instead of crashing scipy.
            big = torch.finfo(torch.float32).max
            cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
