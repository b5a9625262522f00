"""huggingface_hub's errors as kf's, one place for every download from the Hub (banks and teachers)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from kf_model.errors import BankNotFoundError, HubUnavailableError

MAX_REVISION = 200
_REVISION = re.compile(r"[A-Za-z0-9._/-]+")

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx: connection errors come from either
    from httpx2 import TransportError
except ImportError:  # pragma: no cover
    from httpx import TransportError
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (TransportError, ConnectionError, TimeoutError)


def check_revision(revision: str) -> str:
    """A branch, tag, commit or ``refs/pr/N``; refuses ``..``, empty path parts, a leading ``-`` or ``.``: the Hub
    client joins a revision into paths of its cache (``refs/<revision>``), so ``../../x`` would read any file as a
    ref there and load the snapshot it names."""
    parts = revision.split("/") if isinstance(revision, str) else [""]
    if (not isinstance(revision, str) or len(revision) > MAX_REVISION or not _REVISION.fullmatch(revision)
            or ".." in revision or any(not part or part.startswith((".", "-")) or part.endswith(".lock")
                                       for part in parts)):
        text = str(revision)
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise BankNotFoundError(f"{shown!r} is not a revision: give a branch, a tag or a commit (letters, digits, "
                                "'.', '_', '-' and '/' between names, no '..')")
    return revision


@contextmanager
def hub_errors(source: str, revision: str | None, offline_reason: str | None = None, *,
               missing: str = "a file kf needs is missing") -> Iterator[None]:
    """huggingface_hub's errors -> kf's, with a message that names the repo (``missing``: what a missing file means)."""
    repo_id = source.split("@")[0]
    try:
        yield
    except HFValidationError as error:  # "../../x", "a/b/c": refused by the client before any request
        raise BankNotFoundError(f"{repo_id!r} is not a valid Hub repo id (expected 'owner/name')") from error
    except RepositoryNotFoundError as error:
        raise BankNotFoundError(f"Hub repo {repo_id!r} not found (or private: pass a token)") from error
    except RevisionNotFoundError as error:
        raise BankNotFoundError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from error
    except LocalEntryNotFoundError as error:  # before EntryNotFoundError: a subclass of it
        raise HubUnavailableError(
            f"cannot reach the Hub for {source} ({offline_reason or 'no answer'}) and it is not in the local cache"
        ) from error
    except EntryNotFoundError as error:
        raise BankNotFoundError(f"{source}: {missing}") from error
    except HfHubHTTPError as error:
        raise HubUnavailableError(f"the Hub refused {source}: {error}") from error
    except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:
        raise HubUnavailableError(f"cannot reach the Hub for {source}: {error}") from error


def unreachable_reason(source: str, repo_id: str, revision: str | None, token: str | bool | None) -> str | None:
    """None when the Hub answers for ``repo_id``; else why not, and the caller reads the local cache only: the
    download functions retry a connection error for ~25 s (with a page of retry messages), a metadata call fails
    at once. A missing repo or revision is a kf error here already."""
    from huggingface_hub import HfApi

    with hub_errors(source, revision):
        try:
            HfApi(token=token).model_info(repo_id, revision=revision)
        except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:
            return f"{type(error).__name__}: {error}"
    return None
