"""Writing a trained model as a Hugging Face folder that every entry point reads."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

from ..io import atomic_write_text


def exported_processor(cfg: Any, num_classes: int) -> Any:
    """The processor saved with the model: inference at the resolution the model was trained
    around (the original's test-time resize), as validation during training runs it too."""
    from ..processor import Mask2FormerImageProcessor

    return Mask2FormerImageProcessor(size={"shortest_edge": cfg.base_size, "longest_edge": cfg.max_size},
                                     size_divisor=32, ignore_index=255, num_labels=num_classes)


def export_model(model: Any, classes: Sequence[Any], cfg: Any, metrics: dict[str, Any]) -> str:
    """``OUTPUT/model``: config.json, model.safetensors, preprocessor_config.json, classes.json."""
    folder = os.path.join(cfg.output_dir, "model")
    os.makedirs(folder, exist_ok=True)
    model.config.extra["task"] = cfg.task  # what `segment` does by default with this model
    model.save_pretrained(folder)
    exported_processor(cfg, len(classes)).save_pretrained(folder)
    info = [{"id": i, "name": c.name, "color": list(c.color), "isthing": bool(c.isthing)} for i, c in enumerate(classes)]
    atomic_write_text(os.path.join(folder, "classes.json"), json.dumps(info, indent=2))
    if metrics:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        atomic_write_text(os.path.join(folder, "metrics.json"), json.dumps(clean, indent=2))
    return folder
