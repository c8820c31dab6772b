"""Exception types shared by all stages.

Every user-facing error names the bad value and how to fix it. They derive from ``ValueError``
(or ``OSError`` for files) so that callers who only know the builtins still catch them.
"""

from __future__ import annotations


class LhcmlError(Exception):
    """Base class of all lhcml errors."""


class ConfigError(LhcmlError, ValueError):
    """A configuration file or dictionary is invalid (unknown key, bad value, missing key)."""


class SchemaError(LhcmlError, ValueError):
    """A dataset does not have the variables, dtypes or shapes a stage needs."""


class CorruptFileError(LhcmlError, OSError):
    """An input file is truncated, corrupt or not an HDF5/ROOT file."""


class CheckpointMismatchError(LhcmlError, ValueError):
    """A model checkpoint was produced with a different configuration."""
