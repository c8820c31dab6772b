"""lhcml: machine learning for collider physics.

Stages (one subpackage each): ``sim`` (open simulation) -> ``data`` (flat HDF5, preprocessing)
-> ``models``/``train`` -> ``evaluation`` (with ``metrics``/``plots``) -> ``export``; ``tune``,
``tasks`` (per application) and ``validation`` build on them. The import order of the
subpackages is checked by ``tests/test_layering.py``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from lhcml.quiet import install_log_filters as _install_log_filters  # noqa: E402

_install_log_filters()  # third-party advertisements off (Lightning tips); cheap, imports nothing

