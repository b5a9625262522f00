"""A bank on the Hub: its manifest alone (to show its tasks), then only the files of the tasks asked for,
all pinned to the manifest's commit; huggingface_hub's errors become kf's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    OfflineModeIsEnabled,
)
from huggingface_hub.utils import validate_repo_id

from kf_model.bank.files import CONFIG_FILE, WEIGHTS_FILE
from kf_model.bank.manifest import MANIFEST_FILE, Manifest, select_tasks
from kf_model.errors import (
    BankNotFoundError,
)
from kf_model.hub_files import TRANSPORT_ERRORS
from kf_model.hub_files import hub_errors as _hub_errors


class HubManifest(NamedTuple):
    manifest: Manifest
    commit: str  # the commit of factors.json: every later file of the bank is pinned to it
    folder: Path  # the local snapshot folder holding factors.json
    offline: bool  # True when the Hub could not be reached and the cache answered


def fetch_manifest(repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None,
                   local_files_only: bool = False, token: str | bool | None = None) -> HubManifest:
    """Download only ``factors.json`` of a Hub bank, e.g. to show its tasks before choosing which to pull.

    A metadata call first fails fast when the Hub is unreachable (the download functions would retry for
    ~20 s) and falls back to the local cache.
    """
    source = repo_id if revision is None else f"{repo_id}@{revision}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise BankNotFoundError(f"{repo_id!r} is not a valid Hub repo id (expected 'owner/name')") from error
    offline_reason = "local_files_only=True" if local_files_only else None
    if not local_files_only:
        with hub_errors(source, revision):
            try:
                HfApi(token=token).model_info(repo_id, revision=revision)
            except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:  # unreachable: the cache may still answer
                offline_reason, local_files_only = f"{type(error).__name__}: {error}", True
    with hub_errors(source, revision, offline_reason):
        path = Path(hf_hub_download(repo_id, MANIFEST_FILE, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only, token=token))
    return HubManifest(Manifest.read(path), path.parent.name, path.parent, local_files_only)


def hub_errors(source: str, revision: str | None, offline_reason: str | None = None
               ) -> AbstractContextManager[None]:
    """huggingface_hub's errors -> kf's, naming the bank (a repo without factors.json is not a bank)."""
    return _hub_errors(source, revision, offline_reason, missing=f"is not a factor bank: it has no {MANIFEST_FILE}")


def download_bank(repo_id: str, wanted: list[str] | None, revision: str | None, cache_dir: str | Path | None,
              local_files_only: bool, token: str | bool | None, source: str) -> tuple[Path, Manifest, list[str]]:
    """The manifest, then only the CKN and the wanted TSNs, at the manifest's commit.

    Pinning every file to one commit means a branch that moves mid-download cannot mix two banks.
    """
    hub = fetch_manifest(repo_id, revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    names = select_tasks(hub.manifest, wanted, source)
    patterns = [f"ckn/{CONFIG_FILE}", f"ckn/{WEIGHTS_FILE}"]
    patterns += [f"tsn/{n}/{f}" for n in names for f in (CONFIG_FILE, WEIGHTS_FILE)]
    with hub_errors(source, revision, "local_files_only=True" if hub.offline else None):
        folder = Path(snapshot_download(repo_id, revision=hub.commit, allow_patterns=patterns, cache_dir=cache_dir,
                                        local_files_only=hub.offline, token=token))
    return folder, hub.manifest, names
