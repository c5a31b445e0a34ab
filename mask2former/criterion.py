"""Mask2Former training loss (set criterion).

After Hungarian matching, every query is classified (matched ones to their target's class, the
rest to "no object", down-weighted) and every matched query's mask is supervised with BCE and
dice at importance-sampled points. The same loss is applied to the prediction of every decoder
layer (deep supervision), each layer matched on its own.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .matcher import HungarianMatcher, Indices
from .point_sampling import point_sample, uncertain_point_coords


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, num_masks: Tensor) -> Tensor:
    """Per-mask mean BCE over points, summed over masks, divided by ``num_masks``.

    logits, targets: (K, P).
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: Tensor) -> Tensor:
    """Per-mask dice loss (+1 smoothing), summed over masks, divided by ``num_masks``.

    logits, targets: (K, P).
    """
    probs = logits.sigmoid()
    overlap = 2.0 * (probs * targets).sum(1)
    total = probs.sum(1) + targets.sum(1)
    return (1.0 - (overlap + 1.0) / (total + 1.0)).sum() / num_masks


def _full_precision(x: Tensor) -> Tensor:
    # Losses are computed in float32 even under mixed precision, as in the reference.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _matched_query_index(indices: Indices, device: torch.device) -> tuple[Tensor, Tensor]:
    # (batch index, query index) of every matched query, image by image.
    batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    query = torch.cat([src for src, _ in indices])
    return batch.to(device), query.to(device)


class SetCriterion(nn.Module):
    """Hungarian-matched classification + mask loss with deep supervision.

    ``forward`` returns the unweighted components ``loss_ce``, ``loss_mask``, ``loss_dice``
    (and ``loss_ce_{i}`` etc. for auxiliary prediction ``i``, in the order given) plus ``loss``,
    their weighted sum, which is what to back-propagate.
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        no_object_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        # The matching cost uses the same weights as the loss, as in the paper.
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)
        # Most queries are "no object"; down-weighting that class keeps it from dominating.
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        # Not persistent: it is derived from the config and must not appear in checkpoints.
        self.register_buffer("class_weights", class_weights, persistent=False)

    def loss_labels(self, class_logits: Tensor, targets: Sequence[dict[str, Tensor]], indices: Indices) -> Tensor:
        """Weighted cross-entropy over all queries. class_logits: (B, Q, C+1)."""
        class_logits = _full_precision(class_logits)
        batch, query = _matched_query_index(indices, class_logits.device)
        target_classes = torch.full(
            class_logits.shape[:2], self.num_classes, dtype=torch.int64, device=class_logits.device
        )
        matched = [t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)]
        target_classes[batch, query] = torch.cat(matched).to(class_logits.device)
        weight = self.class_weights.to(class_logits.dtype)
        return F.cross_entropy(class_logits.transpose(1, 2), target_classes, weight=weight)

    def _matched_target_masks(self, targets: Sequence[dict[str, Tensor]], indices: Indices) -> Tensor:
        """Matched target masks (K, Hmax, Wmax), in matching order, zero-padded to the batch maximum."""
        height = max(t["masks"].shape[-2] for t in targets)
        width = max(t["masks"].shape[-1] for t in targets)
        picked = []
        for t, (_, tgt) in zip(targets, indices):
            masks = t["masks"][tgt.to(t["masks"].device)]
            # Padding bottom/right keeps normalised coordinates aligned with a padded batch.
            picked.append(F.pad(masks.float(), (0, width - masks.shape[-1], 0, height - masks.shape[-2])))
        return torch.cat(picked)

    def loss_masks(
        self,
        mask_logits: Tensor,
        targets: Sequence[dict[str, Tensor]],
        indices: Indices,
        num_masks: Tensor,
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
    ) -> tuple[Tensor, Tensor]:
        """(BCE, dice) of matched masks at importance-sampled points. mask_logits: (B, Q, H, W)."""
        mask_logits = _full_precision(mask_logits)
        batch, query = _matched_query_index(indices, mask_logits.device)
        pred = mask_logits[batch, query][:, None]  # (K, 1, H, W)
        with torch.no_grad():
            tgt = self._matched_target_masks(targets, indices).to(pred)[:, None]  # (K, 1, H', W')
            # Points are chosen from the prediction alone (where it is unsure), then read from both.
            if isinstance(generator, (list, tuple)):  # one stream per image, drawn image by image
                coords = torch.cat([
                    uncertain_point_coords(pred[batch == b], self.num_points, self.oversample_ratio,
                                           self.importance_sample_ratio, generator=g)
                    for b, g in enumerate(generator)
                ])
            else:
                coords = uncertain_point_coords(
                    pred, self.num_points, self.oversample_ratio, self.importance_sample_ratio, generator=generator
                )
            point_targets = point_sample(tgt, coords)[:, 0]  # (K, P)
        point_logits = point_sample(pred, coords)[:, 0]  # (K, P)
        return sigmoid_bce_loss(point_logits, point_targets, num_masks), dice_loss(
            point_logits, point_targets, num_masks
        )

    @staticmethod
    def num_masks(targets: Sequence[dict[str, Tensor]], device: torch.device) -> Tensor:
        """Target masks per rank, averaged over ranks when distributed, at least 1.

        Every rank divides by the same number, so the gradient does not depend on how the
        masks happen to be split across ranks.
        """
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return count.clamp(min=1.0)

    def forward(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        aux: Optional[Sequence[dict[str, Tensor]]],
        targets: Sequence[dict[str, Tensor]],
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
    ) -> dict[str, Tensor]:
        """class_logits: (B, Q, C+1), mask_logits: (B, Q, H, W); ``aux`` holds earlier decoder
        layers' {"class_queries_logits", "masks_queries_logits"} (or None / []); ``targets[b]``
        has "labels" (N,) and "masks" (N, H', W'). ``generator`` makes the
        point sampling reproducible (it must be on the logits' device); a list gives each
        image its own stream, so the loss does not depend on how images are batched."""
        num_masks = self.num_masks(targets, mask_logits.device)
        layers = [("", class_logits, mask_logits)]
        for i, layer in enumerate(aux or []):
            layers.append((f"_{i}", layer["class_queries_logits"], layer["masks_queries_logits"]))

        losses: dict[str, Tensor] = {}
        total = class_logits.new_zeros((), dtype=torch.float32)
        for suffix, cls, masks in layers:
            indices = self.matcher(cls, masks, targets, generator=generator)
            ce = self.loss_labels(cls, targets, indices)
            bce, dice = self.loss_masks(masks, targets, indices, num_masks, generator=generator)
            losses.update({"loss_ce" + suffix: ce, "loss_mask" + suffix: bce, "loss_dice" + suffix: dice})
            total = total + self.class_weight * ce + self.mask_weight * bce + self.dice_weight * dice
        losses["loss"] = total
        return losses


def build_criterion(config: Any) -> SetCriterion:
    """SetCriterion from a config with Hugging Face Mask2FormerConfig field names."""
    return SetCriterion(
        num_classes=config.num_labels,
        class_weight=config.class_weight,
        mask_weight=config.mask_weight,
        dice_weight=config.dice_weight,
        num_points=config.train_num_points,
        oversample_ratio=config.oversample_ratio,
        importance_sample_ratio=config.importance_sample_ratio,
        no_object_weight=config.no_object_weight,
    )
