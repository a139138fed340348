"""Exceptions raised by matdyn.

Every error a user can cause derives from :class:`MatdynError`. Its message is one line
that names the problem and, where possible, the fix. Entry points catch it, print the
line and exit with status 2, so bad input never ends in a traceback or a partial result.
"""

from __future__ import annotations


class MatdynError(Exception):
    """Base class for errors caused by input, configuration or files."""


class StoreError(MatdynError):
    """A dataset store is missing, unreadable or violates the format contract."""


class ImportDataError(MatdynError):
    """Frames on disk cannot be imported into a store."""


class ConfigError(MatdynError):
    """A configuration value is invalid (wrong range, inconsistent choices)."""


class CheckpointError(MatdynError):
    """A checkpoint or generator bundle is missing, corrupted or incompatible."""


class AnalysisError(MatdynError):
    """An analysis cannot produce a meaningful result from its input."""


class LockedError(MatdynError):
    """Another live process is writing the same run directory or store (matdyn.locks)."""
