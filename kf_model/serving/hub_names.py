"""Checks on the Hub names a visitor types: a repo id and a revision are refused in words before any request.

A revision such as ``../../x`` would otherwise travel to the Hub client and come back as "cannot reach the Hub";
the rules are the Hub's own (repo ids) and git's (ref names), kept small: letters, digits and ``._-/``.
"""

from __future__ import annotations

import re

from kf_model.errors import KFError, RequestError
from kf_model.hub_files import check_revision as check_hub_revision

_REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")


def check_revision(revision: str) -> str:
    """A branch, tag, commit or ``refs/pr/N`` (``kf_model.hub_files.check_revision``), refused as a request error."""
    try:
        return check_hub_revision(revision)
    except KFError as error:
        raise RequestError(str(error)) from None


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
