"""Quiet third-party noise, so that lhcml's own progress lines are what a user reads.

* FastJet prints its banner once per library copy and process: the ``fastjet`` package carries two
  copies (the SWIG bindings and the Awkward-array extension), and every simulation worker process
  prints it again. :func:`import_fastjet` imports the package with both banners consumed (sent to
  ``/dev/null``). FastJet is cited in the docs (docs/simulation.md), as its authors ask.
* Lightning logs "💡 Tip: ..." advertisements (litlogger, litmodels) at every ``Trainer``, and
  warns that ``srun`` "is available but not used" on every machine with Slurm installed (lhcml
  runs batch jobs through dask-jobqueue, not ``srun``): :func:`install_log_filters` drops exactly
  those (other Lightning messages stay).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any

_FASTJET: Any = None


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def install_log_filters() -> None:
    """Drop Lightning's advertisement tips and its ``srun`` hint (idempotent; imports nothing)."""
    import warnings

    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "pytorch_lightning.utilities.rank_zero"):  # fmt: skip
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTips) for f in logger.filters):
            logger.addFilter(_DropLightningTips())


@contextmanager
def _stdout_to_devnull():
    """Send file descriptor 1 (C/C++ ``std::cout`` included) to ``/dev/null`` for the block."""
    import ctypes

    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        libc.fflush(None)  # C stdio buffers hold what C++ wrote: flush them into /dev/null
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def import_fastjet() -> Any:
    """``import fastjet`` with its banners already printed (to ``/dev/null``), once per process."""
    global _FASTJET
    if _FASTJET is not None:
        return _FASTJET
    import awkward as ak
    import fastjet

    try:
        with _stdout_to_devnull():
            from fastjet import _swig

            _swig.ClusterSequence.print_banner()  # the SWIG copy; later calls print nothing
            two = ak.Array([[{"px": 1.0, "py": 0.0, "pz": 0.0, "E": 1.0},
                             {"px": 0.0, "py": 1.0, "pz": 0.0, "E": 1.0}]], with_name="Momentum4D")  # fmt: skip
            # the Awkward extension's copy prints at its first clustering
            fastjet.ClusterSequence(two, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)).inclusive_jets()
    except OSError:  # no file descriptors to juggle (embedded interpreters): keep the banner
        pass
    _FASTJET = fastjet
    return fastjet
