"""Export of the network to ONNX and ``torch.export`` (see docs/export.md)."""
from .metadata import ExportMetadata, build_metadata
from .onnx import DEFAULT_OPSET, MIN_OPSET, ExportReport, check_options, check_standard, export_onnx, read_metadata
from .semantic_head import SemanticSegmentationModule
from .torch_export import ExportError, LogitsModule, export_model

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "ExportError", "ExportMetadata", "ExportReport", "LogitsModule",
           "SemanticSegmentationModule", "build_metadata", "check_options", "check_standard", "export_model", "export_onnx",
           "read_metadata"]
