"""OpenVINO on the CPU device.

OpenVINO's own default ``INFERENCE_PRECISION_HINT`` on CPUs with AMX / AVX512-BF16 is bf16;
here the precision follows ``precision`` like the torch backend: "fp32" (the default) pins
f32, so results match the PyTorch model, and "bf16" / "fp16" ask for those where the CPU
has them (otherwise fp32 with a message)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..export.onnx import require
from ..precision import PrecisionPlan
from .base import OnnxBackend

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}


class OpenVINOBackend(OnnxBackend):
    name = "openvino"

    def __init__(self, path: str, device: Optional[str] = None, precision: str = "fp32",
                 num_threads: Optional[int] = None):
        super().__init__(path)
        ov = require("openvino")
        core = ov.Core()
        capabilities = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        used, message = precision, None
        if precision not in HINTS:
            used, message = "fp32", f"OpenVINO has no {precision} mode for this graph; running fp32"
        elif precision in CAPABILITY and CAPABILITY[precision] not in capabilities:
            used, message = "fp32", f"this CPU has no {CAPABILITY[precision]} support in OpenVINO; running fp32"
        if device is not None and not device.startswith("cpu"):
            message = (message + "; " if message else "") + f"OpenVINO runs on the CPU here, not {device}"
        config = {"INFERENCE_PRECISION_HINT": HINTS[used]}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        self.compiled = core.compile_model(path, "CPU", config)
        self.precision = PrecisionPlan(precision, used, f"OpenVINO CPU {HINTS[used]}", message)

    def _run(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.compiled({"pixel_values": pixel_values})
        # An output can carry several tensor names (ours plus the graph's own), in set order.
        return tuple(result[self.compiled.output(name)] for name in ("class_queries_logits", "masks_queries_logits"))
