"""ONNX Runtime: the CPU provider everywhere, CUDA / TensorRT providers when installed and
the device allows them. Runs float32 (other precisions fall back, with a message)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..export.onnx import require
from ..precision import PrecisionPlan
from .base import OnnxBackend

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def providers_for(device: Optional[str], available: list[str]) -> list[str]:
    """GPU providers first when the device is unset or CUDA, then CPU."""
    wanted = [] if device is not None and not device.startswith("cuda") else [p for p in GPU_PROVIDERS if p in available]
    return wanted + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(OnnxBackend):
    name = "onnxruntime"

    def __init__(self, path: str, device: Optional[str] = None, precision: str = "fp32",
                 num_threads: Optional[int] = None):
        super().__init__(path)
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self.providers = providers_for(device, ort.get_available_providers())
        self.session = ort.InferenceSession(path, options, providers=self.providers)
        used = self.session.get_providers()[0]
        message = None if precision == "fp32" else f"ONNX Runtime runs the exported float32 graph; {precision} falls back to fp32"
        self.precision = PrecisionPlan(precision, "fp32", f"ONNX Runtime {used} float32", message)

    def _run(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        classes, masks = self.session.run(["class_queries_logits", "masks_queries_logits"],
                                          {"pixel_values": pixel_values})
        return classes, masks
