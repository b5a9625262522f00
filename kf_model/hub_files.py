"""huggingface_hub's errors as kf's, one place for every download from the Hub (banks and teachers)."""

from __future__ import annotations

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

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx: connection errors come from either
    from httpx2 import TransportError
except ImportError:  # pragma: no cover
    from httpx import TransportError
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (TransportError, ConnectionError, TimeoutError)


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
            f"cannot reach the Hub for {source} ({offline_reason}) and it is not in the local cache"
        ) from error
    except EntryNotFoundError as error:
        raise BankNotFoundError(f"{source}: {missing}") from error
    except HfHubHTTPError as error:
        raise HubUnavailableError(f"the Hub refused {source}: {error}") from error
    except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:
        raise HubUnavailableError(f"cannot reach the Hub for {source}: {error}") from error
