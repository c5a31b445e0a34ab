"""What travels inside an exported .onnx (ONNX ``metadata_props``), so that the file alone is
enough to segment: the checkpoint's ``config.json`` and ``preprocessor_config.json``, the
classes (names, colours, thing/stuff), the task, the original's test-time resize, the
normalisation and the size divisibility, and which graph the file holds."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from ..config import Mask2FormerConfig
from ..model_info import ModelInfo
from .torch_export import MIN_SIZE, SIZE_DIVISOR, ExportError

PREFIX = "mask2former."
FORMAT_VERSION = "1"
GRAPHS = ("logits", "semantic")


@dataclass
class ExportMetadata:
    config: dict[str, Any]  # config.json
    preprocessor: dict[str, Any]  # preprocessor_config.json
    info: dict[str, Any]  # task, classes, test resize, normalisation, size divisibility
    graph: str  # "logits" (class + mask logits) or "semantic" (label map)

    def to_props(self) -> dict[str, str]:
        return {PREFIX + "format_version": FORMAT_VERSION, PREFIX + "graph": self.graph,
                PREFIX + "config": json.dumps(self.config, sort_keys=True),
                PREFIX + "preprocessor_config": json.dumps(self.preprocessor, sort_keys=True),
                PREFIX + "info": json.dumps(self.info, sort_keys=True)}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str) -> "ExportMetadata":
        missing = [k for k in ("graph", "config", "preprocessor_config", "info") if PREFIX + k not in props]
        if missing:
            raise ExportError(f"{source}: no mask2former metadata in this .onnx (missing {PREFIX}{missing[0]}); "
                              "export it with `mask2former export`")
        try:
            return cls(json.loads(props[PREFIX + "config"]), json.loads(props[PREFIX + "preprocessor_config"]),
                       json.loads(props[PREFIX + "info"]), props[PREFIX + "graph"])
        except json.JSONDecodeError as e:
            raise ExportError(f"{source}: corrupt mask2former metadata ({e})") from None

    def model_config(self) -> Mask2FormerConfig:
        return Mask2FormerConfig.from_dict(self.config)

    def model_info(self) -> ModelInfo:
        i = self.info
        classes = i["classes"]
        things: Optional[list[int]] = i.get("thing_ids")
        return ModelInfo({c["id"]: c["name"] for c in classes}, [tuple(c["color"]) for c in classes], things,
                         i["task"], (int(i["test_size"][0]), int(i["test_size"][1])), None, i.get("dataset"),
                         processor_config=self.preprocessor)


def build_metadata(model: Any, name: str, graph: str) -> ExportMetadata:
    """The metadata of ``model`` (loaded from ``name``) as :class:`ModelInfo` sees it."""
    info = ModelInfo.of(model, name)
    processor = info.processor()
    things = set(info.thing_ids) if info.thing_ids is not None else None
    classes = [{"id": i, "name": info.id2label[i], "color": list(info.palette[i]),
                "isthing": things is None or i in things} for i in range(len(info.id2label))]
    config = model.config.to_dict()
    config["task"] = info.task
    details = {
        "task": info.task, "classes": classes, "thing_ids": info.thing_ids, "dataset": info.dataset,
        "test_size": list(info.test_size),  # the original's test resize: (shortest edge, longest edge)
        "image_mean": list(processor.image_mean), "image_std": list(processor.image_std),
        "rescale_factor": processor.rescale_factor, "size_divisibility": SIZE_DIVISOR, "min_size": MIN_SIZE,
        "inputs": ("pixel_values (B,3,H,W) float32, normalised, zero-padded to multiples of 32"
                   + (", valid_size (2,) int64, target_size (2,) int64" if graph == "semantic" else "")),
        "outputs": ("labels (B,H,W) int64" if graph == "semantic" else
                    "class_queries_logits (B,Q,K+1), masks_queries_logits (B,Q,H/4,W/4)"),
        "source": name,
    }
    return ExportMetadata(config, processor.to_dict(), details, graph)
