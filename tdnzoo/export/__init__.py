"""Deployment exports of tdnzoo models. ONNX today; each format lives in its own module."""
from .onnx import (
    ONNX_EXPORTERS,
    OnnxExport,
    OnnxExportError,
    OnnxParityError,
    export_onnx,
    onnx_metadata,
    read_onnx_metadata,
    verify_onnx,
)

__all__ = [
    "ONNX_EXPORTERS",
    "OnnxExport",
    "OnnxExportError",
    "OnnxParityError",
    "export_onnx",
    "onnx_metadata",
    "read_onnx_metadata",
    "verify_onnx",
]
