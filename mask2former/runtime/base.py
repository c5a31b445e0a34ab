"""What every ONNX backend shares: the file's metadata, input checks, output wrapping."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ..export.onnx import read_metadata
from ..export.torch_export import ExportError
from ..precision import PrecisionPlan

BACKENDS = ("torch", "onnxruntime", "openvino")


@dataclass
class BackendOutput:
    """class_queries_logits (B, Q, K+1), masks_queries_logits (B, Q, H/4, W/4), pixel_mask (B, H, W)."""

    class_queries_logits: Tensor
    masks_queries_logits: Tensor
    pixel_mask: Optional[Tensor] = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class OnnxBackend:
    """An exported .onnx (logits graph) behind the torch model's call signature."""

    name = "onnx"

    def __init__(self, path: str):
        self.path = path
        self.metadata = read_metadata(path)
        if self.metadata.graph != "logits":
            raise ExportError(f"{path}: this .onnx outputs {self.metadata.graph} labels (exported with --postprocess); "
                              "segment/evaluate run the logits graph: export without --postprocess")
        self.config = self.metadata.model_config()
        self.info = self.metadata.model_info()
        self.source = path
        self.precision = PrecisionPlan("fp32", "fp32", "float32")

    def __call__(self, pixel_values: Tensor, pixel_mask: Optional[Tensor] = None, **unused: Any) -> BackendOutput:
        h, w = pixel_values.shape[-2:]
        if h % 32 or w % 32 or min(h, w) < 64:
            raise ValueError(f"{self.path}: inputs must be padded to multiples of 32, at least 64 (got {h}x{w})")
        x = np.ascontiguousarray(pixel_values.detach().to("cpu", torch.float32).numpy())
        classes, masks = self._run(x)
        return BackendOutput(torch.from_numpy(np.asarray(classes)), torch.from_numpy(np.asarray(masks)), pixel_mask)

    def _run(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError
