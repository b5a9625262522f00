"""What a visitor types into the Hub loader is checked before any request."""

from __future__ import annotations

import pytest

from kf_model.errors import RequestError
from kf_model.serving.hub_names import check_hub_key, check_revision


@pytest.mark.parametrize("key", ["kf/bank", "kf-org/my.bank_2@main", "a/b@v1.0", "a/b@refs/pr/3",
                                 "a/b@0123456789abcdef0123456789abcdef01234567"])
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert check_hub_key(key) == key


@pytest.mark.parametrize("revision", ["../../x", "a//b", "-rf", ".hidden", "main.lock", "a b", "x" * 201, "a/"])
def test_malformed_revisions_are_refused_in_words(revision: str) -> None:
    with pytest.raises(RequestError, match="is not a revision"):
        check_revision(revision)
    with pytest.raises(RequestError, match="is not a revision"):
        check_hub_key(f"a/b@{revision}")


@pytest.mark.parametrize("repo", ["a", "a/b/c", "-a/b", "a/b-", "a/b--c", "a/..", "é/b"])
def test_malformed_repo_ids_are_refused(repo: str) -> None:
    with pytest.raises(RequestError, match="is not a Hub repo id"):
        check_hub_key(repo)
