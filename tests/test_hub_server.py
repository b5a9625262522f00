"""The real huggingface_hub client against the local test Hub (tests/hub_server.py), end to end.

These pin down both the server (so other tests can trust it) and the client behaviour kf relies on:
which exception reaches the caller for each failure, what is fetched, and what the cache serves offline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, RepoFolder, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub_server import HubServer

README = b"---\nlicense: apache-2.0\nlibrary_name: kf\ntags:\n- knowledge-factorization\n---\n# A factor bank\n"
FILES = {
    "README.md": README,
    "manifest.json": b'{"tasks": ["t0", "t1", "t2"]}\n',
    "ckn/config.json": b'{"width": 8}\n',
    "ckn/model.safetensors": bytes(range(256)) * 3,
    "tsn/t0/model.safetensors": b"\x00\xff" * 100,
    "tsn/t1/model.safetensors": b"\x01\xfe" * 100,
    "tsn/t2/model.safetensors": b"\x02\xfd" * 100,
}


@dataclass
class Published:
    repo_id: str
    sha: str  # commit tagged v1


@pytest.fixture
def published(hub_server: HubServer, hub_repo_id: str, hf_cache: Path, tmp_path: Path) -> Published:
    """A repo with FILES at tag ``v1`` (and on ``main``), an empty cache, and a cleared request log."""
    folder = tmp_path / "upload"
    for rel, content in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    api = HfApi()
    api.create_repo(hub_repo_id)
    info = api.upload_folder(repo_id=hub_repo_id, folder_path=folder, commit_message="bank v1")
    api.create_tag(hub_repo_id, tag="v1", revision=info.oid)
    hub_server.clear_log()
    return Published(hub_repo_id, info.oid)


def _closed_endpoint() -> str:
    """An endpoint nothing listens on (a port just released by the OS)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_publish_refs_info_and_tree(hub_server: HubServer, published: Published) -> None:
    api = HfApi()
    assert api.create_repo(published.repo_id, exist_ok=True).repo_id == published.repo_id
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(published.repo_id)
    assert conflict.value.response.status_code == 409

    api.create_branch(published.repo_id, branch="dev", revision="v1")
    refs = api.list_repo_refs(published.repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": published.sha, "dev": published.sha}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", published.sha)]

    info = api.model_info(published.repo_id, revision="v1")
    assert info.sha == published.sha and info.id == published.repo_id
    assert sorted(s.rfilename for s in info.siblings) == sorted([".gitattributes", *FILES])
    assert info.card_data is not None and info.card_data.library_name == "kf"

    tree = list(api.list_repo_tree(published.repo_id, recursive=True, revision="v1"))
    files = {e.path: e.size for e in tree if not isinstance(e, RepoFolder)}
    assert files == {".gitattributes": len(hub_server.read_file(published.repo_id, ".gitattributes"))} | {
        p: len(c) for p, c in FILES.items()
    }
    assert {e.path for e in tree if isinstance(e, RepoFolder)} == {"ckn", "tsn", "tsn/t0", "tsn/t1", "tsn/t2"}
    top = [e.path for e in api.list_repo_tree(published.repo_id, path_in_repo="tsn", revision="v1")]
    assert top == ["tsn/t0", "tsn/t1", "tsn/t2"]
    # The blob ids the server reports are git's, which is what the client checks uploads against.
    assert api.file_exists(published.repo_id, "ckn/config.json", revision="v1")

    hub_server.tree_page_size = 2  # the client follows the Link header across pages
    try:
        assert [e.path for e in api.list_repo_tree(published.repo_id, recursive=True, revision="v1")] == [
            e.path for e in tree
        ]
    finally:
        hub_server.tree_page_size = 1000
    assert sum(r.kind == "tree" for r in hub_server.requests) > 2


def test_download_by_tag_and_by_sha(hub_server: HubServer, published: Published) -> None:
    by_tag = hf_hub_download(published.repo_id, "ckn/model.safetensors", revision="v1")
    assert Path(by_tag).read_bytes() == FILES["ckn/model.safetensors"]
    assert f"/snapshots/{published.sha}/" in by_tag

    by_sha = hf_hub_download(published.repo_id, "tsn/t1/model.safetensors", revision=published.sha)
    assert Path(by_sha).read_bytes() == FILES["tsn/t1/model.safetensors"]
    assert hub_server.downloaded_files(published.repo_id) == ["ckn/model.safetensors", "tsn/t1/model.safetensors"]

    hub_server.clear_log()  # a cached file at a commit sha is served without any request
    assert hf_hub_download(published.repo_id, "tsn/t1/model.safetensors", revision=published.sha) == by_sha
    assert hub_server.requests == []


def test_snapshot_allow_patterns_fetch_only_matching_files(hub_server: HubServer, published: Published) -> None:
    patterns = ["manifest.json", "ckn/*", "tsn/t0/*", "tsn/t2/*"]
    folder = Path(snapshot_download(published.repo_id, revision="v1", allow_patterns=patterns))

    expected = [
        "ckn/config.json",
        "ckn/model.safetensors",
        "manifest.json",
        "tsn/t0/model.safetensors",
        "tsn/t2/model.safetensors",
    ]
    assert sorted(hub_server.downloaded_files(published.repo_id)) == expected
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == expected
    assert folder.name == published.sha
    kinds = [r.kind for r in hub_server.requests if r.method != "HEAD" and r.kind != "resolve"]
    assert kinds == ["revision", "tree"]  # one info call (tag -> sha), one recursive listing at the sha


def test_new_commit_moves_main_but_not_the_tag(hub_server: HubServer, published: Published) -> None:
    api = HfApi()
    new = api.upload_file(
        path_or_fileobj=b'{"tasks": ["t0"]}\n',
        path_in_repo="manifest.json",
        repo_id=published.repo_id,
        commit_message="v2",
    )
    api.delete_file("tsn/t2/model.safetensors", repo_id=published.repo_id)
    assert new.oid != published.sha

    assert Path(hf_hub_download(published.repo_id, "manifest.json")).read_bytes() == b'{"tasks": ["t0"]}\n'
    assert (
        Path(hf_hub_download(published.repo_id, "manifest.json", revision="v1")).read_bytes() == FILES["manifest.json"]
    )
    assert api.model_info(published.repo_id, revision="v1").sha == published.sha
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(published.repo_id, "tsn/t2/model.safetensors")
    assert Path(hf_hub_download(published.repo_id, "tsn/t2/model.safetensors", revision="v1")).exists()


def test_pull_request_revision_is_url_encoded(hub_server: HubServer, published: Published) -> None:
    info = HfApi().upload_file(
        path_or_fileobj=b"proposal", path_in_repo="notes.txt", repo_id=published.repo_id, create_pr=True
    )
    assert info.pr_revision == "refs/pr/1"
    assert Path(hf_hub_download(published.repo_id, "notes.txt", revision="refs/pr/1")).read_bytes() == b"proposal"
    assert any(r.path.endswith("/resolve/refs%2Fpr%2F1/notes.txt") for r in hub_server.requests)
    assert "notes.txt" not in hub_server.list_files(published.repo_id)  # main untouched


def test_invalid_readme_front_matter_is_refused(published: Published) -> None:
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
        HfApi().upload_file(
            path_or_fileobj=b"---\nkey: [unclosed\n---\n", path_in_repo="README.md", repo_id=published.repo_id
        )


def test_local_files_only_serves_the_cache(hub_server: HubServer, published: Published) -> None:
    patterns = ["manifest.json", "ckn/*"]
    online = snapshot_download(published.repo_id, revision="v1", allow_patterns=patterns)
    hub_server.clear_log()

    assert snapshot_download(published.repo_id, revision="v1", allow_patterns=patterns, local_files_only=True) == online
    path = hf_hub_download(published.repo_id, "ckn/config.json", revision="v1", local_files_only=True)
    assert Path(path).read_bytes() == FILES["ckn/config.json"]
    # A partial snapshot is not passed off as complete: the cached tree listing knows what is missing.
    with pytest.raises(IncompleteSnapshotError):
        snapshot_download(published.repo_id, revision="v1", local_files_only=True)
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(published.repo_id, "tsn/t0/model.safetensors", revision="v1", local_files_only=True)
    assert hub_server.requests == []


def test_offline_mode_in_a_subprocess(hub_server: HubServer, published: Published, hf_cache: Path) -> None:
    patterns = ["manifest.json", "tsn/t1/*"]
    online = snapshot_download(published.repo_id, revision="v1", allow_patterns=patterns)
    hub_server.clear_log()
    script = textwrap.dedent(
        """
        import json, sys
        from huggingface_hub import HfApi, RepoFolder, hf_hub_download, snapshot_download
        repo, patterns = sys.argv[1], json.loads(sys.argv[2])
        out = {"snapshot": snapshot_download(repo, revision="v1", allow_patterns=patterns),
               "file": hf_hub_download(repo, "manifest.json", revision="v1")}
        for name, call in [("uncached", lambda: snapshot_download("kf-tests/never-cached")),
                           ("uncached_file", lambda: hf_hub_download(repo, "ckn/config.json", revision="v1")),
                           ("api", lambda: HfApi().model_info(repo))]:
            try:
                call()
            except Exception as e:
                out[name] = [c.__name__ for c in type(e).__mro__]
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # HF_ENDPOINT and HF_HUB_CACHE (see hf_cache) are inherited
    result = subprocess.run(
        [sys.executable, "-c", script, published.repo_id, json.dumps(patterns)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["snapshot"] == online
    assert Path(out["file"]).read_bytes() == FILES["manifest.json"]
    assert out["uncached"][0] == "LocalEntryNotFoundError"
    assert out["uncached_file"][0] == "LocalEntryNotFoundError"
    assert out["api"][0] == "OfflineModeIsEnabled" and "ConnectionError" in out["api"]
    assert hub_server.requests == []


def test_remote_errors_map_to_client_exceptions(hub_server: HubServer, published: Published) -> None:
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("kf-tests/no-such-repo")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("kf-tests/no-such-repo", "manifest.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("kf-tests/no-such-repo")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(published.repo_id, revision="v9")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(published.repo_id, "manifest.json", revision="v9")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(published.repo_id, revision="v9")
    with pytest.raises(RemoteEntryNotFoundError) as missing:  # also an EntryNotFoundError and an HfHubHTTPError
        hf_hub_download(published.repo_id, "tsn/t9/model.safetensors", revision="v1")
    assert isinstance(missing.value, EntryNotFoundError) and missing.value.response.status_code == 404
    assert hub_server.downloaded_files(published.repo_id) == []


def test_unreachable_endpoint(published: Published, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = _closed_endpoint()
    # HfApi calls let the transport error through: not an HfHubHTTPError.
    with pytest.raises(httpx2.ConnectError):
        HfApi(endpoint=closed).model_info(published.repo_id)
    with pytest.raises(LocalEntryNotFoundError) as snap:
        snapshot_download(published.repo_id, revision="v1", endpoint=closed)
    assert isinstance(snap.value.__cause__, httpx2.ConnectError)

    # A cached file is served at once; an uncached one is retried with backoff (~23 s unpatched), then refused.
    cached = hf_hub_download(published.repo_id, "manifest.json", revision="v1")
    assert hf_hub_download(published.repo_id, "manifest.json", revision="v1", endpoint=closed) == cached
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)
    with pytest.raises(LocalEntryNotFoundError) as dl:
        hf_hub_download(published.repo_id, "ckn/config.json", revision="v1", endpoint=closed)
    assert isinstance(dl.value.__cause__, httpx2.ConnectError)
    assert not isinstance(dl.value, OfflineModeIsEnabled)


def test_direct_api_seeds_repos(hub_server: HubServer, hub_repo_id: str) -> None:
    hub_server.create_repo(hub_repo_id)
    first = hub_server.commit(hub_repo_id, {"a.txt": b"1", "d/b.txt": b"2"}, message="seed")
    hub_server.create_tag(hub_repo_id, "v1")
    second = hub_server.commit(hub_repo_id, {"a.txt": b"3"}, delete=["d/"])
    assert hub_server.resolve(hub_repo_id, "v1") == first != second == hub_server.resolve(hub_repo_id)
    assert hub_server.list_files(hub_repo_id, "v1") == [".gitattributes", "a.txt", "d/b.txt"]
    assert hub_server.list_files(hub_repo_id) == [".gitattributes", "a.txt"]
    assert HfApi().model_info(hub_repo_id, revision=first[:7]).sha == first
