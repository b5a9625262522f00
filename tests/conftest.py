"""Session-wide test set-up: a local Hub-compatible server instead of huggingface.co.

``huggingface_hub`` reads ``HF_ENDPOINT`` (and the cache/offline/Xet settings) once, at import time,
so this module starts the server and sets the environment *before* anything imports it. Test modules
and kf code may import ``huggingface_hub`` freely: pytest imports this conftest first.

Fixtures: ``hub_server`` (the :class:`~tests.hub_server.HubServer`), ``hub_repo_id`` (a fresh repo id
per test, not created) and ``hf_cache`` (an empty Hub cache dir for one test).
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py could point HF_ENDPOINT at the local test Hub; "
        "it reads HF_ENDPOINT only at import time, so every Hub call would go to huggingface.co. "
        "Do not import huggingface_hub (or kf modules that import it) from a pytest plugin or a root conftest."
    )

from tests.hub_server import HubServer  # after the check above

HUB = HubServer()
_HF_HOME = Path(tempfile.mkdtemp(prefix="kf-tests-hf-home-"))
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
atexit.register(HUB.stop)

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
    os.environ.pop(_name, None)
os.environ.update(
    HF_ENDPOINT=HUB.url,
    HF_HOME=str(_HF_HOME),
    HF_HUB_CACHE=str(_HF_HOME / "hub"),
    HF_TOKEN="test-token",  # any value: the test Hub accepts every token, uploads need one
    HF_HUB_DISABLE_XET="1",  # regular HTTP uploads/downloads only (the test Hub has no Xet storage)
    HF_HUB_DISABLE_TELEMETRY="1",  # also stops the client from fetching /api/agent-harnesses
    HF_HUB_DISABLE_PROGRESS_BARS="1",
)

# Apps built by tests answer in their own process: tests replace or slow down registry methods, which a worker
# process would not see. The default (auto: one worker on two cores) is tested in tests/test_workers.py.
os.environ.setdefault("KF_PREDICT_WORKERS", "0")

_repo_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The local Hub every ``huggingface_hub`` call in the test session talks to (``HF_ENDPOINT``)."""
    return HUB


@pytest.fixture
def hub_repo_id() -> str:
    """A repo id no other test uses (``kf-tests/repo-<n>``); the repo itself is not created."""
    return f"kf-tests/repo-{next(_repo_numbers)}"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty Hub cache for this test, used by default by hf_hub_download/snapshot_download/scan_cache_dir.

    Patches ``huggingface_hub.constants.HF_HUB_CACHE`` (read at call time by the download functions), the copy that
    ``scan_cache_dir`` imported by value, and ``HF_HUB_CACHE`` in the environment for subprocesses.
    """
    import huggingface_hub.constants
    import huggingface_hub.utils._cache_manager

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.utils._cache_manager, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    yield cache


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the test item, so fixtures can react to a failed test (browser screenshots)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
