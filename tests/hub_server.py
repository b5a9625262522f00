"""A small Hugging Face Hub-compatible HTTP server for tests.

The real Hub is unreachable from the test machines, so tests drive the *real* ``huggingface_hub``
client against this server (point ``HF_ENDPOINT`` at :attr:`HubServer.url` before importing
``huggingface_hub``). It implements the subset of the Hub API that the client uses for regular
(non-LFS, non-Xet) uploads and downloads, with git-like revisions: every commit is an immutable
snapshot with a 40-hex sha, and branches, tags and pull-request refs point at commits.

Every request is logged (:attr:`HubServer.requests`) so that tests can assert exactly which files
were downloaded (:meth:`HubServer.downloaded_files`).

Standard library only (PyYAML, already a dependency of ``huggingface_hub``, is used when present to
validate README front matter and fill ``cardData``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

try:  # only for README front matter; the server works without it
    import yaml
except ImportError:  # pragma: no cover
    yaml = None  # type: ignore[assignment]

__all__ = ["HeldDownloads", "HubError", "HubServer", "RequestRecord"]

# URL prefix (plural) -> repo type, as in huggingface_hub.constants.REPO_TYPES_MAPPING.
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
DEFAULT_BRANCH = "main"
USER = "kf-tests"
# What the real Hub puts in the first commit of a new repo; snapshot_download fetches it too.
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An HTTP error in the form the client maps to its exception types (see ``hf_raise_for_status``)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.body = dict(body or {})  # extra JSON fields, e.g. the repo "url" of a 409 on create


def _now() -> str:
    """Timestamp in the one format ``huggingface_hub.utils.parse_datetime`` accepts."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha(content: bytes) -> str:
    """Git blob id: what the Hub sends as ETag / tree ``oid`` for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Commit:
    """An immutable snapshot of a repo."""

    sha: str
    parent: str | None
    title: str
    message: str
    date: str
    files: Mapping[str, bytes]


@dataclass
class Repo:
    """A repo: commits plus the refs pointing at them."""

    repo_type: str
    repo_id: str
    created_at: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)  # Spaces only: {"sdk": ..., "hardware": ...} as requested

    def resolve(self, revision: str) -> str | None:
        """Commit sha for a branch, tag, ``refs/...`` name, full sha or unique sha prefix (>= 7)."""
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix) and revision[len(prefix) :] in refs:
                return refs[revision[len(prefix) :]]
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision.startswith("refs/pr/") and revision[8:].isdigit():
            return self.pull_requests.get(int(revision[8:]))
        if revision in self.commits:
            return revision
        if len(revision) >= 7 and all(c in "0123456789abcdef" for c in revision):
            matches = [sha for sha in self.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None


@dataclass(frozen=True)
class RequestRecord:
    """One logged request. ``revision`` and ``file_path`` are URL-decoded; ``kind`` names the endpoint."""

    method: str
    path: str
    status: int
    kind: str
    repo_type: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    file_path: str | None = None


@dataclass
class HeldDownloads:
    """A slow route: file downloads (``GET .../resolve/...``) whose path starts with ``prefix`` wait for
    :attr:`release` (at most ``timeout`` seconds); each one that starts waiting releases :attr:`waiting` once."""

    prefix: str
    timeout: float = 120.0
    release: threading.Event = field(default_factory=threading.Event)
    waiting: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def matches(self, path: str) -> bool:
        return path.startswith(self.prefix) and not self.release.is_set()

    def hold(self) -> None:
        self.waiting.release()
        self.release.wait(self.timeout)


def _not_found_repo(repo_type: str, repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")


def _not_found_revision(revision: str) -> HubError:
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _front_matter(readme: bytes) -> tuple[bool, Any]:
    """(has front matter, parsed YAML or None). Raises ValueError on malformed front matter."""
    text = readme.decode("utf-8", errors="replace").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return False, None
    end = text.find("\n---", 3)
    if end == -1:
        raise ValueError("README.md front matter is not closed by '---'")
    if yaml is None:  # pragma: no cover
        return True, None
    try:
        data = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"Invalid YAML in README.md front matter: {e}") from e
    if not isinstance(data, dict):
        raise ValueError("README.md front matter must be a YAML mapping")
    return True, data


class HubServer:
    """A Hub-compatible server on ``127.0.0.1``, started on a free port at construction.

    Besides the HTTP API, it offers a direct (no HTTP) API to seed or tamper with repos in tests:
    :meth:`create_repo`, :meth:`commit`, :meth:`create_tag`, :meth:`create_branch`, :meth:`resolve`,
    :meth:`read_file`, :meth:`list_files`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tree_page_size: int = 1000) -> None:
        self.tree_page_size = tree_page_size  # entries per tree page; lower it to exercise pagination
        self._repos: dict[tuple[str, str], Repo] = {}
        self._log: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._counter = itertools.count(1)
        self._held: list[HeldDownloads] = []
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Endpoint to use as ``HF_ENDPOINT`` (no trailing slash)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"HubServer({self.url!r}, repos={len(self._repos)})"

    # ----- request log -----

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget logged requests (e.g. after seeding a repo, before the part under test)."""
        with self._lock:
            self._log.clear()

    def downloaded_files(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Paths of files whose content was served (successful ``GET .../resolve/...``), in order, repeats kept."""
        return [
            r.file_path or ""
            for r in self.requests
            if r.kind == "resolve"
            and r.method == "GET"
            and r.status in (200, 206)
            and r.repo_id == repo_id
            and r.repo_type == repo_type
        ]

    def hold_downloads(self, prefix: str, timeout: float = 120.0) -> HeldDownloads:
        """Make downloads of files under ``prefix`` hang until ``.release.set()`` (a slow Hub, for tests)."""
        held = HeldDownloads(prefix, timeout)
        with self._lock:
            self._held = [h for h in self._held if not h.release.is_set()] + [held]
        return held

    def _held_for(self, path: str) -> HeldDownloads | None:
        with self._lock:
            return next((h for h in self._held if h.matches(path)), None)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    # ----- direct API (also used by the HTTP handlers) -----

    def create_repo(self, repo_id: str, repo_type: str = "model", *, private: bool = False) -> Repo:
        """Create a repo with the Hub's initial commit (a ``.gitattributes`` file) on ``main``."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                url = self._repo_url(self._repos[(repo_type, repo_id)])
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}", body={"url": url})
            repo = Repo(repo_type=repo_type, repo_id=repo_id, created_at=_now(), private=private)
            self._repos[(repo_type, repo_id)] = repo
            sha = self._new_commit(repo, None, {".gitattributes": GITATTRIBUTES}, "initial commit", "")
            repo.branches[DEFAULT_BRANCH] = sha
            return repo

    def delete_repo(self, repo_id: str, repo_type: str = "model") -> None:
        """Delete a repo and all its commits."""
        with self._lock:
            if self._repos.pop((repo_type, repo_id), None) is None:
                raise _not_found_repo(repo_type, repo_id)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored repo, or a RepoNotFound :class:`HubError`."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _not_found_repo(repo_type, repo_id)
        return repo

    def resolve(self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> str:
        """Commit sha that ``revision`` points at."""
        with self._lock:
            sha = self.repo(repo_id, repo_type).resolve(revision)
        if sha is None:
            raise _not_found_revision(revision)
        return sha

    def list_files(self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> list[str]:
        """Sorted file paths at ``revision``."""
        repo = self.repo(repo_id, repo_type)
        return sorted(repo.commits[self.resolve(repo_id, revision, repo_type)].files)

    def read_file(self, repo_id: str, path: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> bytes:
        """Content of ``path`` at ``revision`` (an EntryNotFound :class:`HubError` if absent)."""
        repo = self.repo(repo_id, repo_type)
        files = repo.commits[self.resolve(repo_id, revision, repo_type)].files
        if path not in files:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        return files[path]

    def commit(
        self,
        repo_id: str,
        add: Mapping[str, bytes] | None = None,
        delete: Iterable[str] = (),
        *,
        revision: str = DEFAULT_BRANCH,
        message: str = "commit",
        repo_type: str = "model",
    ) -> str:
        """Commit ``add`` (path -> content) and ``delete`` (file paths, or folders ending in '/') to a branch."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            branch = revision.removeprefix("refs/heads/")
            if branch not in repo.branches:
                raise _not_found_revision(revision)
            files = dict(repo.commits[repo.branches[branch]].files)
            for path in delete:
                self._delete(files, path, folder=path.endswith("/"))
            files.update(add or {})
            repo.branches[branch] = self._new_commit(repo, repo.branches[branch], files, message, "")
            return repo.branches[branch]

    def create_tag(self, repo_id: str, tag: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> str:
        """Point a new tag at ``revision``; returns the tagged sha."""
        with self._lock:
            sha = self.resolve(repo_id, revision, repo_type)
            repo = self.repo(repo_id, repo_type)
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = sha
            return sha

    def create_branch(self, repo_id: str, branch: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> str:
        """Start a new branch at ``revision``; returns its sha."""
        if not branch or branch.startswith("refs/"):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        with self._lock:
            sha = self.resolve(repo_id, revision, repo_type)
            repo = self.repo(repo_id, repo_type)
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = sha
            return sha

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, bytes], title: str, message: str) -> str:
        digest = hashlib.sha1()
        for part in (repo.repo_type, repo.repo_id, parent or "", title, message, str(next(self._counter))):
            digest.update(part.encode() + b"\0")
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = Commit(sha, parent, title, message, _now(), MappingProxyType(dict(files)))
        return sha

    @staticmethod
    def _delete(files: dict[str, bytes], path: str, *, folder: bool) -> None:
        path = path.strip("/")
        if not folder:
            if path not in files:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del files[path]
            return
        doomed = [p for p in files if p.startswith(path + "/")]
        if not doomed:
            raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
        for p in doomed:
            del files[p]

    def _repo_url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.url}/{prefix}{repo.repo_id}"


def _tree_entries(files: Mapping[str, bytes], base: str, recursive: bool) -> list[dict[str, Any]]:
    """Tree listing under ``base`` ('' = root), like ``GET /api/{type}s/{id}/tree/{rev}/{base}``."""
    prefix = f"{base}/" if base else ""
    below = {p: c for p, c in files.items() if p.startswith(prefix)}
    if base and not below:
        raise HubError(404, f"{base} does not exist", "EntryNotFound")
    entries: dict[str, dict[str, Any]] = {}
    for path, content in below.items():
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts)):  # folders on the way
            folder = prefix + "/".join(parts[:depth])
            if folder not in entries and (recursive or depth == 1):
                entries[folder] = {"type": "directory", "path": folder, "size": 0, "oid": _tree_oid(files, folder)}
        if recursive or len(parts) == 1:
            entries[path] = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha(content)}
    return [entries[p] for p in sorted(entries)]


def _tree_oid(files: Mapping[str, bytes], folder: str) -> str:
    digest = hashlib.sha1(b"tree\0")
    for path in sorted(p for p in files if p.startswith(folder + "/")):
        digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
    return digest.hexdigest()


def _paths_info(files: Mapping[str, bytes], paths: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        path = path.strip("/")
        if path in files:
            out.append({"type": "file", "path": path, "size": len(files[path]), "oid": git_blob_sha(files[path])})
        elif any(p.startswith(path + "/") for p in files):
            out.append({"type": "directory", "path": path, "size": 0, "oid": _tree_oid(files, path)})
    return out


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the :class:`HubServer` it belongs to."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pooled httpx session expects
    server_version = "kf-test-hub/1.0"

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ----- plumbing -----

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self._query = parse_qs(split.query)
        self._body = self._read_body()
        self._record = {"kind": "unknown"}
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        status = 500
        try:
            status = self._route(split.path.split("/")[1:], segments)
        except HubError as e:
            status = self._send_error(e)
        except Exception as e:  # a bug in this server: 501, which the client does not retry (500 it would, for ~20 s)
            status = self._send_error(HubError(501, f"test hub server error: {e!r}"))
            raise
        finally:
            self.hub._record(RequestRecord(self.command, split.path, status, **self._record))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        length: int | None = None,
    ) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> int:
        return self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, error: HubError) -> int:
        header_safe = " ".join(error.message.split()).encode("ascii", "backslashreplace").decode()
        headers = {"X-Error-Message": header_safe, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        return self._json({"error": error.message, **error.body}, error.status, headers)

    def _json_body(self) -> Any:
        try:
            return json.loads(self._body or b"{}")
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e

    # ----- routing -----

    def _route(self, raw: list[str], seg: list[str]) -> int:
        method = self.command
        if seg[:1] == ["api"]:
            return self._route_api(method, raw[1:], seg[1:])
        typed = len(seg) > 3 and seg[0] in ("datasets", "spaces", "kernels") and seg[3] == "resolve"
        if typed or (len(seg) > 2 and seg[2] == "resolve"):
            repo_type = REPO_TYPES[seg[0]] if typed else "model"
            rest = seg[1:] if typed else seg
            if method in ("GET", "HEAD") and len(rest) >= 5:
                return self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        raise HubError(404, f"Not found: {self.command} {self.path}")

    def _route_api(self, method: str, raw: list[str], seg: list[str]) -> int:
        if seg == ["repos", "create"] and method == "POST":
            return self._create_repo()
        if seg == ["repos", "delete"] and method == "POST":
            return self._delete_repo()
        if seg == ["validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if seg == ["whoami-v2"] and method == "GET":
            self._record = {"kind": "whoami"}
            return self._json(
                {
                    "type": "user",
                    "name": USER,
                    "fullname": USER,
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"role": "write"}},
                }
            )
        if seg == ["agent-harnesses"] and method == "GET":
            self._record = {"kind": "agent-harnesses"}
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if len(seg) < 3 or seg[0] not in REPO_TYPES:
            raise HubError(404, f"Not found: {self.command} {self.path}")
        repo_type, repo_id, action, args = REPO_TYPES[seg[0]], f"{seg[1]}/{seg[2]}", seg[3:4], seg[4:]
        self._record = {"kind": "info", "repo_type": repo_type, "repo_id": repo_id}
        repo = self.hub.repo(repo_id, repo_type)
        if method == "GET" and not action:
            return self._info(repo, DEFAULT_BRANCH)
        name = action[0]
        self._record["kind"] = name
        rev = args[0] if args else DEFAULT_BRANCH
        if args:
            self._record["revision"] = rev
        routes = {
            ("GET", "revision"): lambda: self._info(repo, rev),
            ("GET", "tree"): lambda: self._tree(repo, rev, "/".join(args[1:]), raw),
            ("GET", "refs"): lambda: self._refs(repo),
            ("GET", "commits"): lambda: self._commits(repo, rev),
            ("POST", "paths-info"): lambda: self._paths_info(repo, rev),
            ("POST", "preupload"): lambda: self._preupload(repo, rev),
            ("POST", "commit"): lambda: self._commit(repo, rev),
            ("POST", "tag"): lambda: self._create_tag(repo, rev),
            ("DELETE", "tag"): lambda: self._delete_ref(repo.tags, rev, "tag"),
            ("POST", "branch"): lambda: self._create_branch(repo, rev),
            ("DELETE", "branch"): lambda: self._delete_ref(repo.branches, rev, "branch"),
            ("POST", "hardware"): lambda: self._space_hardware(repo),
        }
        handler = routes.get((method, name))
        if handler is None:
            raise HubError(404, f"Not found: {self.command} {self.path}")
        return handler()

    # ----- repos -----

    def _create_repo(self) -> int:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if not body.get("organization"):
            raise HubError(400, "this test hub needs namespaced repo ids ('namespace/name')")
        repo_id = f"{body['organization']}/{body['name']}"
        self._record = {"kind": "create-repo", "repo_type": repo_type, "repo_id": repo_id}
        repo = self.hub.create_repo(repo_id, repo_type, private=body.get("visibility") == "private")
        if repo_type == "space":
            repo.space = {"sdk": body.get("sdk"), "hardware": body.get("hardware")}
        return self._json({"url": self.hub._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> int:
        body = self._json_body()
        repo_type, repo_id = body.get("type") or "model", f"{body.get('organization')}/{body.get('name')}"
        self._record = {"kind": "delete-repo", "repo_type": repo_type, "repo_id": repo_id}
        self.hub.delete_repo(repo_id, repo_type)
        return self._json({})

    def _validate_yaml(self) -> int:
        self._record = {"kind": "validate-yaml"}
        try:
            _front_matter(str(self._json_body().get("content", "")).encode())
        except ValueError as e:
            return self._json({"errors": [{"message": str(e)}], "warnings": []}, 400)
        return self._json({"errors": [], "warnings": []})

    def _commit_of(self, repo: Repo, rev: str) -> Commit:
        with self.hub._lock:
            sha = repo.resolve(rev)
            if sha is None:
                raise _not_found_revision(rev)
            return repo.commits[sha]

    def _info(self, repo: Repo, rev: str) -> int:
        commit = self._commit_of(repo, rev)
        blobs = self._query.get("blobs", [""])[0].lower() in ("1", "true")
        siblings = [
            {"rfilename": p, **({"size": len(c), "blobId": git_blob_sha(c)} if blobs else {})}
            for p, c in sorted(commit.files.items())
        ]
        data: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(c) for c in commit.files.values()),
        }
        if repo.repo_type == "model":
            data["modelId"] = repo.repo_id
        if repo.repo_type == "space":
            data["sdk"] = repo.space.get("sdk")
            data["runtime"] = {"stage": "BUILDING", "hardware": {"current": None,
                                                                "requested": repo.space.get("hardware")}}
        if "README.md" in commit.files:
            try:
                card = _front_matter(commit.files["README.md"])[1]
            except ValueError:
                card = None
            if card:
                data["cardData"] = card
                data["tags"] = list(card.get("tags") or [])
                for key in ("library_name", "pipeline_tag"):
                    if key in card:
                        data[key] = card[key]
        return self._json(data)

    def _tree(self, repo: Repo, rev: str, base: str, raw: list[str]) -> int:
        commit = self._commit_of(repo, rev)
        self._record["file_path"] = base or None
        recursive = self._query.get("recursive", [""])[0].lower() in ("1", "true")
        entries = _tree_entries(commit.files, base.strip("/"), recursive)
        start = int(self._query.get("cursor", ["0"])[0])
        end = start + max(1, self.hub.tree_page_size)
        headers = {}
        if end < len(entries):
            query = {k: v[0] for k, v in self._query.items()} | {"cursor": str(end)}
            headers["Link"] = f'<{self.hub.url}/api/{"/".join(raw)}?{urlencode(query)}>; rel="next"'
        return self._json(entries[start:end], headers=headers)

    def _refs(self, repo: Repo) -> int:
        with self.hub._lock:

            def refs(kind: str, items: Mapping[Any, str]) -> list[dict[str, str]]:
                return [
                    {"name": str(n), "ref": f"refs/{kind}/{n}", "targetCommit": s} for n, s in sorted(items.items())
                ]

            data = {"branches": refs("heads", repo.branches), "converts": [], "tags": refs("tags", repo.tags)}
            if self._query.get("include_prs"):
                data["pullRequests"] = refs("pr", repo.pull_requests)
        return self._json(data)

    def _commits(self, repo: Repo, rev: str) -> int:
        commit: Commit | None = self._commit_of(repo, rev)
        out = []
        while commit is not None:
            out.append(
                {
                    "id": commit.sha,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": USER}],
                    "date": commit.date,
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return self._json(out)

    def _paths_info(self, repo: Repo, rev: str) -> int:
        commit = self._commit_of(repo, rev)
        form = parse_qs(self._body.decode())
        return self._json(_paths_info(commit.files, form.get("paths", [])))

    # ----- writes -----

    def _writable_ref(self, repo: Repo, rev: str) -> tuple[dict[Any, str], Any]:
        """(ref table, key) for a branch or PR revision; tags and commits cannot be committed to."""
        if rev.startswith("refs/pr/") and rev[8:].isdigit() and int(rev[8:]) in repo.pull_requests:
            return repo.pull_requests, int(rev[8:])
        branch = rev.removeprefix("refs/heads/")
        if branch in repo.branches:
            return repo.branches, branch
        if repo.resolve(rev) is not None:
            raise HubError(400, f"Invalid rev id: {rev} is not a branch")
        raise _not_found_revision(rev)

    def _preupload(self, repo: Repo, rev: str) -> int:
        files = self._commit_of(repo, rev).files
        wanted = self._json_body().get("files", [])
        return self._json(
            {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None,
                    }
                    for f in wanted
                ],
                "commitOid": self._commit_of(repo, rev).sha,
            }
        )

    def _commit(self, repo: Repo, rev: str) -> int:
        lines = [json.loads(line) for line in self._body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item.get("key") == "header"), {})
        with self.hub._lock:
            refs, key = self._writable_ref(repo, rev)
            pr_url = None
            if self._query.get("create_pr", [""])[0] == "1":
                num = max(repo.pull_requests, default=0) + 1
                repo.pull_requests[num] = refs[key]
                refs, key = repo.pull_requests, num
                pr_url = f"{self.hub._repo_url(repo)}/discussions/{num}"
            parent = header.get("parentCommit")
            if parent and repo.resolve(parent) != refs[key]:
                raise HubError(412, f"Parent commit {parent} is not the head of {rev}")
            files = dict(repo.commits[refs[key]].files)
            for item in lines:
                value = item.get("value", {})
                if item.get("key") == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item.get("key") in ("deletedFile", "deletedFolder"):
                    HubServer._delete(files, value["path"], folder=item["key"] == "deletedFolder")
                elif item.get("key") in ("lfsFile", "copyFile"):
                    raise HubError(400, f"{item['key']} is not supported by the test hub (regular uploads only)")
            sha = self.hub._new_commit(repo, refs[key], files, header.get("summary", ""), header.get("description", ""))
            refs[key] = sha
        return self._json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self.hub._repo_url(repo)}/commit/{sha}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )

    def _space_hardware(self, repo: Repo) -> int:
        """``POST /api/spaces/{id}/hardware`` (``HfApi.request_space_hardware``): records the flavor."""
        if repo.repo_type != "space":
            raise HubError(404, f"Not found: {self.command} {self.path}")
        repo.space["hardware"] = self._json_body().get("flavor")
        return self._json({"stage": "BUILDING", "hardware": {"current": None, "requested": repo.space["hardware"]}})

    def _create_tag(self, repo: Repo, rev: str) -> int:
        tag = self._json_body().get("tag")
        if not tag:
            raise HubError(400, "Missing tag name")
        self.hub.create_tag(repo.repo_id, tag, rev, repo.repo_type)
        return self._json({})

    def _create_branch(self, repo: Repo, branch: str) -> int:
        start = self._json_body().get("startingPoint") or DEFAULT_BRANCH
        self.hub.create_branch(repo.repo_id, branch, start, repo.repo_type)
        return self._json({})

    def _delete_ref(self, refs: dict[str, str], name: str, kind: str) -> int:
        with self.hub._lock:
            if kind == "branch" and name == DEFAULT_BRANCH:
                raise HubError(403, "Cannot delete the default branch")
            if refs.pop(name, None) is None:
                raise _not_found_revision(name)
        return self._json({})

    # ----- downloads -----

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> int:
        self._record = {
            "kind": "resolve",
            "repo_type": repo_type,
            "repo_id": repo_id,
            "revision": rev,
            "file_path": path,
        }
        commit = self._commit_of(self.hub.repo(repo_id, repo_type), rev)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        content = commit.files[path]
        held = self.hub._held_for(path) if self.command == "GET" else None
        if held is not None:
            held.hold()
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha(content)}"', "Accept-Ranges": "bytes"}
        status, body = 200, content
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET" and range_header.startswith("bytes="):
            first, _, last = range_header[6:].partition("-")
            start = int(first) if first else max(0, len(content) - int(last))
            stop = int(last) + 1 if first and last else len(content)
            if start >= len(content):
                raise HubError(
                    416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(content)}"}
                )
            status, body = 206, content[start:stop]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(content)}"
        return self._send(status, body, headers, "application/octet-stream", length=len(body))
