"""Periodic evaluation during training: semantic metrics on the validation split."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed as dist_utils


@torch.inference_mode()
def predict_semantic(model: torch.nn.Module, image: np.ndarray, short_edge: int, max_size: int) -> torch.Tensor:
    """(H, W) label map for one HxWx3 uint8 image: the original's test-time resize, padding
    to a multiple of 32, and semantic inference resized back to the image's size."""
    from ..postprocess import MaskResizer, semantic_segmentation
    from .trainer import normalize

    h, w = image.shape[:2]
    scale = min(short_edge / min(h, w), max_size / max(h, w))
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    x = normalize(x)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    x = F.pad(x, (0, pw - nw, 0, ph - nh))
    out = model(pixel_values=x)
    resizer = MaskResizer(out.masks_queries_logits[0], padded_size=(ph, pw), valid_size=(nh, nw), output_size=(h, w))
    return semantic_segmentation(out.class_queries_logits[0], resizer, resize_before_inference=False)


def validate(model: torch.nn.Module, cfg: Any, device: torch.device) -> dict[str, Any]:
    """mIoU etc. of ``model`` on ``cfg.val_split`` (empty dict when there is no such split)."""
    from ..data import build_dataset
    from ..evaluation import SemanticEvaluator

    try:
        val = build_dataset(cfg.dataset, cfg.data_root, cfg.val_split)
    except (OSError, ValueError):
        return {}
    if len(val) == 0:
        return {}
    was_training = model.training
    model.eval()
    evaluator = SemanticEvaluator(val.num_classes, ignore_label=255, class_names=[c.name for c in val.classes])
    rank, world = (0, 1) if not torch.distributed.is_initialized() else (torch.distributed.get_rank(),
                                                                        dist_utils.world_size())
    for i in range(rank, len(val), world):
        sample = val[i]
        pred = predict_semantic(model, sample["image"], cfg.base_size, cfg.max_size)
        evaluator.update(pred.cpu().numpy(), sample["sem_seg"])
    if world > 1:
        conf = torch.from_numpy(evaluator.conf_matrix)
        dist_utils.all_reduce_sum(conf)
        evaluator.conf_matrix = conf.numpy()
    model.train(was_training)
    return evaluator.compute()
