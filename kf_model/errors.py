"""Every refusal a user can meet, as one exception family.

Catching ``KFError`` is enough to show a clean message instead of a stack trace
(the app does exactly that); the subclasses let tests and callers tell them apart.
"""

from __future__ import annotations


class KFError(Exception):
    """Base class of kf's own errors; the message is written for a person."""


class DataNotFoundError(KFError, FileNotFoundError):
    """A dataset's files are missing; the message says what was looked for and where."""


class UnknownNameError(KFError, KeyError):
    """An unknown dataset, split, task or architecture; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class UnknownTaskError(UnknownNameError):
    """A task that the bank does not hold."""


class IncompatibleFactorsError(KFError):
    """Factors from two different factorizations (CKN fingerprints differ) or formats."""


class UnsafeWeightsError(KFError):
    """Weights only available in a pickle-based format; kf never unpickles them."""


class CorruptWeightsError(KFError):
    """A weights or config file that cannot be read; the message names the file."""


class HubUnavailableError(KFError):
    """The Hub (or the repo, or the revision) cannot be reached."""


class InvalidImageError(KFError, ValueError):
    """An input image that cannot be used; the message says why."""


class BankNotFoundError(KFError, FileNotFoundError):
    """No factor bank where one was asked for: a missing folder, repo, revision or manifest."""


class TaskExistsError(KFError):
    """A task added to a bank that already holds one of that name (pass replace=True / --replace)."""
