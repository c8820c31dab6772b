"""Export of trained models (ONNX with metadata, onnxruntime checks, latency).

:func:`export_model` is the one entry point for every kind of model (taggers, BDTs, the PAED);
:func:`export_onnx` is the tagger exporter behind it.
"""

from __future__ import annotations

__all__ = ["EXPORTERS", "export_model", "export_onnx", "read_metadata"]

_WHERE = {"EXPORTERS": "model", "export_model": "model", "export_onnx": "onnx", "read_metadata": "onnx"}


def __getattr__(name: str):  # lazy: importing lhcml.export must not import torch
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"lhcml.export.{_WHERE[name]}"), name)
    raise AttributeError(name)
