"""Shared pytest fixtures."""

from __future__ import annotations

import os

# Tiny models on 2 cores: several intra-op threads per process only add contention
# (tests with multi-threaded torch ran up to 25x slower). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")
