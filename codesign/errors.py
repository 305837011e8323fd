"""Exceptions raised by codesign: every user-facing failure is a :class:`CodesignError`.

The CLI turns these into a one-line message and a non-zero exit code.
"""

from __future__ import annotations


class CodesignError(Exception):
    """Base class for every error codesign reports to a user."""


class SpaceError(CodesignError):
    """A search-space description is malformed or unsupported."""


class GenomeError(CodesignError):
    """A genome does not fit its search space."""


class DatasetError(CodesignError):
    """A dataset is missing or malformed."""


class CheckpointError(CodesignError):
    """A checkpoint or weights file is missing, corrupt or does not match."""


class ExportError(CodesignError):
    """Exporting a subnet failed or its output does not match the reference."""
