"""Assembled networks for use outside Python (ONNX)."""


__all__ = [

]
