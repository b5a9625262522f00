"""Checks on the Hub names a visitor types: a repo id and a revision are refused in words before any request.

A revision such as ``../../x`` would otherwise travel to the Hub client and come back as "cannot reach the Hub";
the rules are the Hub's own (repo ids) and git's (ref names), kept small: letters, digits and ``._-/``.
"""

from __future__ import annotations

import re

from kf_model.errors import RequestError

MAX_REVISION = 200
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_REVISION = re.compile(r"[A-Za-z0-9._/-]+")


def check_revision(revision: str) -> str:
    """A branch, tag, commit or ``refs/pr/N``; refuses ``..``, empty path parts, a leading ``-`` or ``.``."""
    parts = revision.split("/")
    if (len(revision) > MAX_REVISION or not _REVISION.fullmatch(revision) or ".." in revision
            or any(not part or part.startswith((".", "-")) or part.endswith(".lock") for part in parts)):
        shown = revision if len(revision) <= 60 else revision[:57] + "..."
        raise RequestError(f"{shown!r} is not a revision: give a branch, a tag or a commit (letters, digits, "
                           "'.', '_', '-' and '/' between names, no '..')")
    return revision


def check_hub_key(key: str) -> str:
    """``owner/name[@revision]`` with a valid Hub repo id and revision; returns ``key`` unchanged."""
    repo, _, revision = key.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(p) and "--" not in p and ".." not in p for p in parts):
        raise RequestError(f"{repo[:60]!r} is not a Hub repo id: expected 'owner/name' (letters, digits, '.', '_', "
                           "'-')")
    if revision:
        check_revision(revision)
    return key
