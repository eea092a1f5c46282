"""Exceptions raised by oodfilter.

Every error a user can cause derives from :class:`OODFilterError`, so an application (and the CLI's
error boundary) can catch one class and show its message. Messages say what was wrong and how to fix it.
"""

from __future__ import annotations


class OODFilterError(Exception):
    """Base class of every error oodfilter raises on purpose."""


class InputError(OODFilterError):
    """A user-supplied input (file, class list, argument) is missing, empty or malformed."""


class ClassListError(InputError):
    """A class list is empty or cannot be read."""


class ModelLoadError(OODFilterError):
    """A model, checkpoint or bundle cannot be built or loaded."""


class CheckpointError(ModelLoadError):
    """A checkpoint or bundle file is unreadable, corrupt, or does not match the architecture."""


class ModelDownloadError(ModelLoadError):
    """Named weights are not in the cache and cannot be downloaded (offline, unreachable, refused, corrupt).

    The message names the URL to fetch by hand and the command that converts the file.
    """


class ModelMismatchError(OODFilterError):
    """Cached or saved data belongs to a different model (or dimension) than the one in use."""


class MissingDependencyError(OODFilterError):
    """An optional dependency needed for the requested feature is not installed."""


class UnsupportedModelError(ModelLoadError):
    """The model's architecture cannot carry the requested feature (e.g. a CLIPN no-branch)."""


class UnknownNameError(OODFilterError, KeyError):
    """A name (scorer, template set, plugin) is not registered."""

    def __str__(self) -> str:
        # KeyError quotes its message; show it as written.
        return str(self.args[0]) if self.args else ""


class OutputError(OODFilterError):
    """An output cannot be written (it exists, it is an input, the disk is full, no permission)."""
