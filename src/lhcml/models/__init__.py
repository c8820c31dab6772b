"""Model architectures, found by registered name (never by import strings from configs)."""

from lhcml.models.registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
