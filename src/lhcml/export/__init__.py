"""Export of trained taggers (ONNX with metadata, onnxruntime checks, latency)."""

from __future__ import annotations

__all__ = ["export_onnx", "read_metadata"]


def __getattr__(name: str):  # lazy: importing lhcml.export must not import torch
    if name in __all__:
        from lhcml.export import onnx as _onnx

        return getattr(_onnx, name)
    raise AttributeError(name)
