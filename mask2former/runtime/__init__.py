"""Runtimes behind ``Segmenter``: the PyTorch model itself, or an exported .onnx run by ONNX
Runtime or OpenVINO. A non-torch backend is a callable ``backend(pixel_values=(B,3,H,W),
pixel_mask=(B,H,W))`` returning :class:`~.base.BackendOutput` (the torch model's output
fields that post-processing reads), with ``info`` (:class:`~mask2former.model_info.ModelInfo`
from the file's metadata), ``config`` and ``precision``."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Optional, Union

from .base import BACKENDS, BackendOutput, OnnxBackend

__all__ = ["BACKENDS", "BackendOutput", "OnnxBackend", "choose_backend", "load_backend"]


def choose_backend(model: Any, backend: Optional[str]) -> str:
    """The backend asked for, or the default: onnxruntime for a path ending in .onnx, else torch."""
    from ..export import ExportError

    if isinstance(model, OnnxBackend):
        return model.name
    is_onnx = isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".onnx")
    if backend is None:
        return "onnxruntime" if is_onnx else "torch"
    if backend not in BACKENDS:
        raise ExportError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "torch" and is_onnx:
        raise ExportError(f"{os.fspath(model)}: an .onnx file runs with --backend onnxruntime or openvino")
    return backend


def load_backend(model: Union[str, os.PathLike, Any], backend: str, device: Optional[str] = None,
                 precision: str = "fp32", num_threads: Optional[int] = None) -> OnnxBackend:
    """An ONNX runtime over ``model``: an exported .onnx, or any model we load (exported to a
    temporary .onnx first, which takes a while)."""
    if isinstance(model, OnnxBackend):
        return model
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".onnx"):
        path = os.fspath(model)
    else:
        from ..export import export_onnx

        folder = tempfile.mkdtemp(prefix="mask2former-onnx-")
        path = export_onnx(model, os.path.join(folder, "model.onnx")).path
    if backend == "onnxruntime":
        from .ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device, precision=precision, num_threads=num_threads)
    from .openvino_backend import OpenVINOBackend

    return OpenVINOBackend(path, device=device, precision=precision, num_threads=num_threads)
