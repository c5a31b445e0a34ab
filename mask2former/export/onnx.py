"""Export to ONNX: standard operators only, dynamic batch/height/width, metadata inside.

Built on the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs
``onnxscript``) from the ``torch.export`` program of :mod:`.torch_export`: it keeps sizes
symbolic, where the TorchScript exporter would freeze every size-dependent Python branch
at the example's size. Deformable attention becomes ``GridSample`` (opset >= 16), masked
attention plain ``MatMul``/``Where``/``Softmax``; no custom domain, no ``com.microsoft`` op.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..io import atomic_path
from .metadata import ExportMetadata, build_metadata
from .semantic_head import SemanticSegmentationModule
from .torch_export import ExportError, LogitsModule, check_exportable, example_pixels, export_program, exporting

DEFAULT_OPSET = 18
MIN_OPSET = 16  # GridSample
POSTPROCESS = (None, "semantic")
STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class ExportReport:
    path: str
    seconds: float
    bytes: int
    opset: int
    graph: str


def require(package: str) -> Any:
    """Import a runtime/exporter package or fail with one line naming the install."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ExportError(f"{package} is not installed: pip install 'mask2former[export]' (or pip install "
                          f"{package})") from None


def check_options(opset: int, postprocess: Optional[str]) -> None:
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: deformable attention needs GridSample, opset >= {MIN_OPSET}")
    if postprocess not in POSTPROCESS:
        raise ExportError(f"--postprocess {postprocess} cannot be exported: only 'semantic' runs in the graph "
                          "(panoptic and instance post-processing stay in Python)")


def export_onnx(model: Union[str, os.PathLike, torch.nn.Module], output: Union[str, os.PathLike],
                opset: int = DEFAULT_OPSET, postprocess: Optional[str] = None, name: str = "") -> ExportReport:
    """Write ``model`` (a loaded model, HF folder, hub id or ``.pkl``) to ``output`` (.onnx).

    postprocess: None (outputs class and mask logits) or "semantic" (inputs pixel_values,
    valid_size, target_size; output the label map). The file is checked (``onnx.checker``,
    shape inference, standard domains only) before it is renamed into place.
    """
    check_options(opset, postprocess)
    require("onnxscript")
    onnx = require("onnx")
    from ..model import Mask2FormerForUniversalSegmentation

    if isinstance(model, (str, os.PathLike)):
        name = name or os.fspath(model)
        model = Mask2FormerForUniversalSegmentation.from_pretrained(model)
    check_exportable(model)
    graph = postprocess or "logits"
    meta = build_metadata(model, name or getattr(model, "source", ""), graph)
    start = time.perf_counter()
    pixels = example_pixels(model)
    if postprocess == "semantic":
        module: torch.nn.Module = SemanticSegmentationModule(model)
        args: tuple = (pixels, torch.tensor([250, 300]), torch.tensor([500, 601]))
        inputs, outputs = ["pixel_values", "valid_size", "target_size"], ["labels"]
    else:
        module, args = LogitsModule(model), (pixels,)
        inputs, outputs = ["pixel_values"], ["class_queries_logits", "masks_queries_logits"]
    with exporting(model), _quiet():
        program = export_program(module, args)
        onnx_program = torch.onnx.export(program, args, dynamo=True, opset_version=opset, input_names=inputs,
                                         output_names=outputs, optimize=True, verbose=False)
    proto = onnx_program.model_proto
    _name_dynamic_axes(proto)
    _set_metadata(proto, meta)
    check_standard(proto)
    output = os.fspath(output)
    with atomic_path(output) as tmp:
        onnx.save_model(proto, tmp)
        onnx.checker.check_model(tmp, full_check=True)  # the written file, with shape inference
    return ExportReport(output, time.perf_counter() - start, os.path.getsize(output), opset, graph)


def check_standard(proto: Any) -> None:
    """Every node (and function) of the graph is a standard ONNX operator."""
    nodes = list(proto.graph.node) + [n for f in proto.functions for n in f.node]
    custom = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS})
    custom += sorted({o.domain for o in proto.opset_import if o.domain not in STANDARD_DOMAINS})
    if custom:
        raise ExportError(f"the exported graph has non-standard operators: {', '.join(custom)}")


def _set_metadata(proto: Any, meta: ExportMetadata) -> None:
    props = meta.to_props()
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "mask2former"


def _name_dynamic_axes(proto: Any) -> None:
    """Readable names for the symbolic input axes (batch, height, width)."""
    for value in proto.graph.input:
        if value.name != "pixel_values":
            continue
        for dim, label in zip(value.type.tensor_type.shape.dim, ("batch", None, "height", "width")):
            if label and dim.dim_param:
                dim.dim_param = label


class _quiet:
    """The exporter prints progress lines and warnings; a command prints its own summary."""

    def __enter__(self) -> None:
        import contextlib
        import io
        import warnings

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        self._logger = logging.getLogger("torch.onnx")  # e.g. "torchvision is not installed" lines
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        self._logger.setLevel(self._level)
        self._stack.close()


def read_metadata(path: Union[str, os.PathLike]) -> ExportMetadata:
    """The metadata of an exported .onnx (one clear error when the file has none)."""
    onnx = require("onnx")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such file")
    try:
        proto = onnx.load_model(path, load_external_data=False)
    except Exception as e:  # not an ONNX protobuf
        raise ExportError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    return ExportMetadata.from_props({p.key: p.value for p in proto.metadata_props}, path)
