"""Every refusal a user can meet, as one exception family.

Catching ``KFError`` is enough to show a clean message instead of a stack trace
(the app does exactly that); the subclasses let tests and callers tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterable


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


class InvalidConfigError(KFError, ValueError):
    """A config value (a bank's config.json or manifest, a training option) of the wrong type or out of range."""


class InvalidTaskNameError(InvalidConfigError):
    """A task name that is not a slug: names become folder names, so they are checked before any path is built."""


class InvalidDataError(KFError, ValueError):
    """A dataset that cannot be trained on as it is (one class only, an empty label, a corrupt image...)."""


class UnsafePathError(InvalidDataError):
    """A file name or link in a dataset that leads outside its folder."""


class InvalidArgumentError(KFError, ValueError):
    """A call with arguments a function cannot use (shapes, ranges, sizes): a programming error, said plainly."""


class FusedStackError(KFError, RuntimeError):
    """An operation a TSN stack folded for inference no longer supports (training, splitting back)."""


class EmptySelectionError(KFError, ValueError):
    """No task chosen where at least one is needed."""


def name_list(names: Iterable[str], limit: int = 5) -> str:
    """At most ``limit`` quoted names and how many more: a message stays short whatever a request holds."""
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")
