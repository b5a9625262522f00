"""Every refusal a user can meet, as one exception family.

Catching ``KFError`` is enough to show a clean message instead of a stack trace
(the app does exactly that); the subclasses let tests and callers tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_NAME_CHARS = 60  # a longer name is cut in a message (a request may send a megabyte "name")


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


class RequestError(KFError, ValueError):
    """A request that cannot be answered as it is: no image, no task ticked."""


class BusyError(KFError):
    """The app is already loading as many banks as it allows; refused at once rather than kept waiting."""


class BankLoadingError(BusyError):
    """A bank whose files are still downloading: answered at once ("loading") instead of waiting in a slot."""


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


class UnwritablePathError(KFError, OSError):
    """A file or folder kf was asked to write that cannot be written there (a folder, a read-only place...)."""


class InvalidArgumentError(KFError, ValueError):
    """A call with arguments a function cannot use (shapes, ranges, sizes): a programming error, said plainly."""


class FusedStackError(KFError, RuntimeError):
    """An operation a TSN stack folded for inference no longer supports (training, splitting back)."""


class EmptySelectionError(KFError, ValueError):
    """No task chosen where at least one is needed."""


def quoted(name: object, width: int = MAX_NAME_CHARS) -> str:
    """``repr(name)``, cut to about ``width`` characters with "..." so that one huge name keeps a message short."""
    text = str(name)
    return repr(text if len(text) <= width else text[: max(width - 3, 1)] + "...")


def name_list(names: Iterable[str], limit: int = 5) -> str:
    """At most ``limit`` names, quoted, then how many more: "'a', 'b', 'c', 'd', 'e' and 9,995 more".

    Messages name a handful of things, never all 10,000 of a hostile request.
    """
    shown: list[str] = []
    total = 0
    for name in names:
        if total < limit:
            shown.append(quoted(name))
        total += 1
    more = total - len(shown)
    if not shown and more:
        return f"{more:,} names"
    return ", ".join(shown) + (f" and {more:,} more" if more else "")


class TaskExistsError(KFError):
    """A task added to a bank that already holds one of that name (pass replace=True / --replace)."""
