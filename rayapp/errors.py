"""Exceptions that carry a message meant for the user (printed as one line, no traceback)."""

from __future__ import annotations


class RayappError(Exception):
    """An expected failure with a user-facing message."""


class ConfigError(RayappError):
    """Invalid or missing settings."""


class LakeUnreachableError(RayappError):
    """The lake (local path or object store) cannot be read or written."""


class FileRejectedError(RayappError):
    """A landing file that cannot be parsed at all."""


class PortInUseError(RayappError):
    """A port this run must listen on is held by another process."""
