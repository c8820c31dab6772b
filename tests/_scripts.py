"""Load a script of ``benchmarks/`` as a module, so tests can call its functions (one helper for the job)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str, module_name: str | None = None) -> ModuleType:
    """``benchmarks/<script>`` imported under ``module_name`` (default: the file's stem), registered in
    :data:`sys.modules` so that its dataclasses and pickling work."""
    name = module_name or Path(script).stem
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
