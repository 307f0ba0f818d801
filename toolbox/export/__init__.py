"""Exporting trained models to ONNX and TorchScript, checked against the model they came from."""

from toolbox.export._formats import (
    DEFAULT_OPSET,
    EXPORTERS,
    FORMATS,
    LEGACY_DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    Format,
)
from toolbox.export._inspect import OnnxSummary, OnnxTensor, summarize_onnx
from toolbox.export._module import ModuleExport, export_module
from toolbox.export._parity import ParityFailed, ParityResult
from toolbox.export._service import ExportResult, export_model

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "FORMATS",
    "LEGACY_DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "ExportResult",
    "Format",
    "ModuleExport",
    "OnnxSummary",
    "OnnxTensor",
    "ParityFailed",
    "ParityResult",
    "export_model",
    "export_module",
    "summarize_onnx",
]
