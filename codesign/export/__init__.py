"""Export: static subnets to checked ONNX (and, with the export issue, TVM artifacts)."""

from codesign.export.onnx_export import check_onnx_parity, export_onnx, onnxruntime_logits
from codesign.export.pipeline import ExportResult, export_subnet

__all__ = ["ExportResult", "check_onnx_parity", "export_onnx", "export_subnet", "onnxruntime_logits"]
