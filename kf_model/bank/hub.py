"""A bank on the Hub: its manifest alone (to show its tasks), then only the files of the tasks asked for,
all pinned to the manifest's commit; huggingface_hub's errors become kf's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from kf_model.bank.files import CONFIG_FILE, WEIGHTS_FILE
from kf_model.bank.manifest import (
    EVALUATION_DIR,
    FAMILIARITY_FILES,
    MANIFEST_FILE,
    RESULTS_JSON,
    RESULTS_MD,
    Manifest,
    select_tasks,
)
from kf_model.errors import (
    BankNotFoundError,
    CorruptWeightsError,
)
from kf_model.hub_files import check_revision, unreachable_reason
from kf_model.hub_files import hub_errors as _hub_errors
from kf_model.limits import MAX_MANIFEST_BYTES


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
    if revision is not None:
        check_revision(revision)  # before it becomes a path in the cache (refs/<revision>)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise BankNotFoundError(f"{repo_id!r} is not a valid Hub repo id (expected 'owner/name')") from error
    offline_reason = "local_files_only=True" if local_files_only else None
    if not local_files_only:  # unreachable: the cache may still answer
        offline_reason = unreachable_reason(source, repo_id, revision, token)
        local_files_only = offline_reason is not None
        if not local_files_only:
            with hub_errors(source, revision):
                _check_manifest_size(HfApi(token=token), repo_id, revision, source)
    with hub_errors(source, revision, offline_reason):
        path = Path(hf_hub_download(repo_id, MANIFEST_FILE, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only, token=token))
    return HubManifest(Manifest.read(path), path.parent.name, path.parent, local_files_only)


def bank_files(manifest: Manifest, tasks: list[str]) -> list[str]:
    """The files a load of ``tasks`` reads besides the manifest: the CKN, each TSN, and ``familiarity/`` when
    the manifest says the bank has it. Exact names: ``allow_patterns`` would also match globs."""
    files = [f"ckn/{CONFIG_FILE}", f"ckn/{WEIGHTS_FILE}"]
    files += [f"tsn/{n}/{f}" for n in tasks for f in (CONFIG_FILE, WEIGHTS_FILE)]
    return files + (list(FAMILIARITY_FILES) if manifest.familiarity else [])


MAX_EVALUATION_FILES = 16  # evaluation/ files shown by the app (results.json, results.md, a few figures)
MAX_EVALUATION_FILE_BYTES = 8 * 2**20


def evaluation_files(repo_id: str, commit: str, token: str | bool | None = None) -> list[str]:
    """The ``evaluation/`` files of a Hub bank worth showing, named one by one from the repo's listing: the
    report (results.json, results.md) and the PNG figures directly in the folder, each at most
    ``MAX_EVALUATION_FILE_BYTES``, at most ``MAX_EVALUATION_FILES`` (a glob would pull anything in there)."""
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    with hub_errors(repo_id, commit):
        try:
            entries = list(HfApi(token=token).list_repo_tree(repo_id, EVALUATION_DIR, revision=commit))
        except EntryNotFoundError:  # a bank that was never evaluated
            return []
    names = [e.path for e in entries if isinstance(e, RepoFile) and e.size <= MAX_EVALUATION_FILE_BYTES
             and (e.path.rsplit("/", 1)[-1] in (RESULTS_JSON, RESULTS_MD) or e.path.endswith(".png"))
             and e.path.count("/") == 1]
    return sorted(names, key=lambda name: (not name.endswith((".json", ".md")), name))[:MAX_EVALUATION_FILES]


def _check_manifest_size(api: HfApi, repo_id: str, revision: str | None, source: str) -> None:
    """Refuse, before downloading it, a ``factors.json`` over :data:`~kf_model.limits.MAX_MANIFEST_BYTES`."""
    for info in api.get_paths_info(repo_id, [MANIFEST_FILE], revision=revision):
        size = getattr(info, "size", None)
        if isinstance(size, int) and size > MAX_MANIFEST_BYTES:
            raise CorruptWeightsError(f"{source}: its {MANIFEST_FILE} is {size:,} bytes; kf reads at most "
                                      f"{MAX_MANIFEST_BYTES:,}")


def hub_errors(source: str, revision: str | None, offline_reason: str | None = None
               ) -> AbstractContextManager[None]:
    """huggingface_hub's errors -> kf's, naming the bank (a repo without factors.json is not a bank)."""
    return _hub_errors(source, revision, offline_reason, missing=f"is not a factor bank: it has no {MANIFEST_FILE}")


def download_bank(repo_id: str, wanted: list[str] | None, revision: str | None, cache_dir: str | Path | None,
              local_files_only: bool, token: str | bool | None, source: str) -> tuple[Path, Manifest, list[str]]:
    """The manifest, then only the CKN, the wanted TSNs and the familiarity statistics the manifest declares,
    at the manifest's commit, each file named (no pattern pulls whatever else a repo holds).

    Pinning every file to one commit means a branch that moves mid-download cannot mix two banks.
    """
    hub = fetch_manifest(repo_id, revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    names = select_tasks(hub.manifest, wanted, source)
    patterns = bank_files(hub.manifest, names)
    with hub_errors(source, revision, "local_files_only=True" if hub.offline else None):
        folder = Path(snapshot_download(repo_id, revision=hub.commit, allow_patterns=patterns, cache_dir=cache_dir,
                                        local_files_only=hub.offline, token=token))
    return folder, hub.manifest, names
