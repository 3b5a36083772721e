"""Errors the user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class OrbitMeshError(Exception):
    """Base class for errors that are the input's or the configuration's fault, not a bug."""

    exit_code = 2


class InputError(OrbitMeshError):
    """A file or folder given to the tool is missing, unreadable or inconsistent.

    The message always names the offending path first: ``PATH: problem``.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(OrbitMeshError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""
