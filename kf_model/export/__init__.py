"""Assembled networks for use outside Python (ONNX)."""

from kf_model.export.onnx import export_onnx, onnx_metadata

__all__ = ["export_onnx", "onnx_metadata"]
