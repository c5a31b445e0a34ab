"""``GET /v1/model``: what is being served, from the model itself."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..segmenter import TASKS, Segmenter
from .config import ServeConfig


def describe_model(seg: Segmenter, name: str, config: ServeConfig) -> dict[str, Any]:
    from ..cli import describe_backbone

    cfg = seg.model.config
    info = seg.info
    things = set(info.thing_ids) if info.thing_ids is not None else set(info.id2label)
    try:
        parameters = int(sum(p.numel() for p in seg.model.parameters()))
    except Exception:  # a quantised copy may not list its packed weights as parameters
        parameters = None
    short, long = info.test_size
    limits = asdict(config)
    limits.pop("api_key")
    return {
        "name": name,
        "task": seg.task,
        # test-time augmentation and tiling are semantic-only
        "tasks": ["semantic"] if seg.tta or seg.sliding_window is not None else list(TASKS),
        "architecture": {
            "backbone": describe_backbone(cfg),
            "pixel_decoder": f"MSDeformAttn, {cfg.encoder_layers} layers, {cfg.feature_size} channels",
            "decoder": f"{cfg.decoder_layers - 1} masked-attention layers, {cfg.num_queries} queries, "
                       f"hidden {cfg.hidden_dim}, {cfg.num_attention_heads} heads",
            "parameters": parameters,
        },
        "classes": [{"id": i, "name": n, "color": list(info.palette[i]), "isthing": i in things}
                    for i, n in sorted(info.id2label.items())],
        "precision": {"requested": seg.precision.requested, "used": seg.precision.used, "path": seg.precision.path},
        "device": str(seg.device),
        "resize": seg.resize,
        "test_size": {"shortest_edge": short, "longest_edge": long},
        "defaults": {"threshold": seg.threshold, "overlap_threshold": seg.overlap_threshold,
                     "mask_threshold": seg.mask_threshold},
        "limits": limits,
        "auth": config.api_key is not None,
    }
