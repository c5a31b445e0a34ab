"""``torch.export`` of the network with dynamic batch, height and width.

The exported function is :class:`LogitsModule`: normalised, padded ``pixel_values``
(B, 3, H, W), H and W multiples of 32 and at least 64, in; the final prediction's class
logits (B, Q, K+1) and mask logits (B, Q, H/4, W/4) out. The ONNX exporter starts from the
same program; AOTInductor users can take it as is.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

from .traceable import traceable

SIZE_DIVISOR = 32  # the backbone's coarsest stride: exported sizes are multiples of it
MIN_SIZE = 64  # 2 x 32: sizes of a single stride-32 cell would be frozen by the exporter
MAX_SIZE = 8192


class ExportError(ValueError):
    """A model, option or file that cannot be exported or run; the message is one line."""


class LogitsModule(nn.Module):
    """The network as an exported graph sees it: pixel_values -> (class logits, mask logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(pixel_values=pixel_values)
        return out.class_queries_logits, out.masks_queries_logits


def check_exportable(model: nn.Module) -> None:
    """One clear error for a model this exporter does not handle."""
    from ..backbone.resnet import ResNet
    from ..backbone.swin import SwinTransformer
    from ..model import Mask2FormerForUniversalSegmentation

    if not isinstance(model, Mask2FormerForUniversalSegmentation):
        raise ExportError(f"cannot export {type(model).__name__}: expected a Mask2FormerForUniversalSegmentation")
    if not isinstance(model.backbone, (SwinTransformer, ResNet)):
        raise ExportError(f"cannot export backbone {type(model.backbone).__name__} (Swin and ResNet export)")
    if model.dtype != torch.float32:
        raise ExportError(f"export a float32 model, not {model.dtype} (bf16/int8 are runtime precision modes)")
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and not isinstance(weight, Tensor) or "quantized" in type(module).__module__:
            raise ExportError(f"cannot export a quantised model (layer {name}); export the float32 model")


def _dims(batch: bool = True) -> dict[int, Any]:
    # Dim("h") counts stride-32 cells: sizes are multiples of 32 by construction.
    h = torch.export.Dim("height_cells", min=MIN_SIZE // SIZE_DIVISOR, max=MAX_SIZE // SIZE_DIVISOR)
    w = torch.export.Dim("width_cells", min=MIN_SIZE // SIZE_DIVISOR, max=MAX_SIZE // SIZE_DIVISOR)
    dims = {2: SIZE_DIVISOR * h, 3: SIZE_DIVISOR * w}
    if batch:
        dims[0] = torch.export.Dim("batch", min=1, max=1024)
    return dims


def example_pixels(model: Optional[nn.Module] = None, batch: int = 2) -> Tensor:
    """An example input whose branches are the general ones: batch 2 (batch 1 would freeze the
    batch size), sizes that pad Swin's windows, and at least two windows per axis in every
    Swin stage. The exporter specialises a single window (its count becomes 1 in the graph),
    so an example of one window per axis (e.g. 256x320 for Swin-L's 12x12 windows) gave a
    graph that ran only inputs of that size class; one of several windows runs both."""
    window = max((getattr(stage, "window", 0) for stage in getattr(getattr(model, "backbone", None), "layers", [])),
                 default=0)
    height = max(256, SIZE_DIVISOR * (window + 1))  # stride 32: window + 1 cells, padded to two windows
    return torch.randn(batch, 3, height, height + 64)


@contextlib.contextmanager
def exporting(model: nn.Module) -> Iterator[None]:
    """The network's export-friendly form, with SDPA traced as plain math (its fused CPU
    kernel has strides that the ONNX decompositions do not reproduce)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    was_training = model.training
    model.eval()
    try:
        with traceable(model), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        model.train(was_training)


def export_program(module: nn.Module, args: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``module``, its first input (pixel values) dynamic in batch,
    height and width; call inside :func:`exporting`."""
    dynamic_shapes = (_dims(),) + tuple(None for _ in args[1:])
    return torch.export.export(module, args, dynamic_shapes=dynamic_shapes)


def export_model(model: nn.Module, example: Optional[Tensor] = None) -> torch.export.ExportedProgram:
    """The network as a ``torch.export`` program, dynamic in batch, height and width
    (multiples of 32, 64..8192). ``program.module()(pixel_values)`` -> (class, mask logits).

    The program asserts at run time what the exporter assumed: that every Swin stage has
    more than one window per axis (sizes > 7 * 32 = 224 for 7x7 windows, > 384 for 12x12).
    The ONNX graph built from it drops those assertions and runs any size (tested)."""
    check_exportable(model)
    with exporting(model):
        return export_program(LogitsModule(model), (example if example is not None else example_pixels(model),))
