"""Issue 18, item 1: a Hub bank whose files come down slowly must not stall anyone else.

The local Hub (tests/hub_server.py) holds the downloads of ``familiarity/`` until the test releases them: four
requests on that bank make one load (each file downloaded once, no unrelated file), the three others are told
"loading" at once, and a bundled bank answers while the slow load still hangs.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from kf_model.errors import BankLoadingError
from kf_model.serving import BankRegistry, PredictionGate
from tests.app_fixtures import make_bank, running_demo, write_banks, write_images

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

REQUESTS = 4  # concurrent requests on the slow bank (the probe)
UNRELATED = "familiarity/unrelated-50MB.bin"  # a file a glob on familiarity/* used to pull


@pytest.fixture(scope="module")
def banks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_banks(tmp_path_factory.mktemp("banks"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def calibrated_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bank folder with familiarity statistics and an unrelated file beside them."""
    from kf_model.serving.familiarity import calibrate

    folder = make_bank("dsprites", seed=6).save_pretrained(tmp_path_factory.mktemp("calibrated") / "bank")
    calibrate(folder, train_limit=128, test_limit=64)
    (folder / UNRELATED).write_bytes(b"\0" * 4096)
    return folder


@pytest.fixture
def slow_hub_bank(calibrated_bank: Path, hub_server, hub_repo_id: str, hf_cache: Path,
                  monkeypatch: pytest.MonkeyPatch) -> str:
    import huggingface_hub.constants as constants
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(hub_repo_id, exist_ok=True)
    api.upload_folder(repo_id=hub_repo_id, folder_path=calibrated_bank)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 120)  # a held download is slow, not dead
    hub_server.clear_log()
    return hub_repo_id


def downloads(hub_server, repo_id: str) -> collections.Counter:
    return collections.Counter(hub_server.downloaded_files(repo_id))


def test_a_slow_hub_bank_loads_once_and_never_takes_a_prediction_slot(banks_dir: Path, images: dict[str, Path],
                                                                      hub_server, slow_hub_bank: str) -> None:
    registry = BankRegistry(banks_dir, warmup=False)
    gate = PredictionGate(registry, predictions=2, loads=2, waiting_loads=2)
    held = hub_server.hold_downloads("familiarity/")
    pool = ThreadPoolExecutor(max_workers=REQUESTS + 1)
    try:
        slow = [pool.submit(gate.predict, images["grey.png"], slow_hub_bank, ["shape"]) for _ in range(REQUESTS)]
        assert held.waiting.acquire(timeout=120)  # the one load reached familiarity/, and hangs there
        # the others are answered at once, while the load still hangs
        wait_until(lambda: sum(future.done() for future in slow) == REQUESTS - 1, "three answers while one loads")
        refused = [future for future in slow if future.done()]
        for future in refused:
            with pytest.raises(BankLoadingError, match="still loading"):
                future.result()
        (loading,) = [future for future in slow if future not in refused]
        # a bundled bank answers while the slow load hangs: no prediction slot is held by it
        bundled = pool.submit(gate.predict, images["grey.png"], "dsprites", ["shape"]).result(timeout=120)
        assert bundled.tasks == ["shape"] and not loading.done()
        assert gate.loads_in_flight == 1
        with pytest.raises(BankLoadingError, match="still loading"):  # asked again meanwhile: still "loading"
            gate.api_predict(images["grey.png"], slow_hub_bank, None)
    finally:
        held.release.set()
        pool.shutdown(wait=True)
    prediction = loading.result()
    assert prediction.familiarity is not None  # the statistics came with the load
    counts = downloads(hub_server, slow_hub_bank)
    assert set(counts.values()) == {1}, counts  # each file once
    assert {"factors.json", "familiarity/config.json", "familiarity/model.safetensors"} <= set(counts)
    assert UNRELATED not in counts
    hub_server.clear_log()
    again = gate.predict(images["grey.png"], slow_hub_bank, ["shape", "scale"])  # a new task: only its TSN
    assert again.familiarity is not None
    assert sorted(downloads(hub_server, slow_hub_bank)) == ["tsn/scale/config.json", "tsn/scale/model.safetensors"]


def test_a_slow_hub_bank_through_the_app(tmp_path: Path, images: dict[str, Path], hub_server,
                                         slow_hub_bank: str) -> None:
    """The same over /predict: the app's clients on the slow bank get "loading", a bundled bank answers."""
    held = hub_server.hold_downloads("familiarity/")
    with running_demo(tmp_path / "banks") as (url, demo):
        clients = [Client(url, verbose=False, httpx_kwargs={"timeout": 120})  # a loaded machine is slow, not dead
                   for _ in range(REQUESTS + 1)]
        try:
            jobs = [client.submit(handle_file(str(images["grey.png"])), slow_hub_bank, ["shape"],
                                  api_name="/predict") for client in clients[:REQUESTS]]
            assert held.waiting.acquire(timeout=120)
            wait_until(lambda: sum(job.done() for job in jobs) == REQUESTS - 1, "three answers while one loads")
            finished = [job for job in jobs if job.done()]
            for job in finished:
                with pytest.raises(AppError, match="still loading"):
                    job.result()
            bundled = clients[-1].predict(handle_file(str(images["grey.png"])), "dsprites", ["shape"],
                                          api_name="/predict")
            assert list(bundled) == ["shape", "_input"]
            assert sum(not job.done() for job in jobs) == 1 and demo.kf_gate.loads_in_flight == 1
        finally:
            held.release.set()
        (loading,) = [job for job in jobs if job not in finished]
        assert list(loading.result(timeout=120)) == ["shape", "_input"]
    counts = downloads(hub_server, slow_hub_bank)
    assert set(counts.values()) == {1} and UNRELATED not in counts, counts



def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Synchronisation, not a timing assertion: the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_a_hub_banks_zip_keeps_its_familiarity_statistics(banks_dir: Path, hub_server, slow_hub_bank: str,
                                                          tmp_path: Path) -> None:
    """Item 10: the zip of a Hub bank used to drop familiarity/ and its manifest key (bundled banks kept them)."""
    import json
    import zipfile

    registry = BankRegistry(banks_dir, warmup=False)
    archive = registry.export_zip(slow_hub_bank, ["shape"], tmp_path / "out")
    with zipfile.ZipFile(archive) as zf:
        names = {Path(*Path(n).parts[1:]).as_posix() for n in zf.namelist()}
        manifest = json.loads(next(zf.read(n) for n in zf.namelist() if n.endswith("/factors.json")))
    assert {"familiarity/config.json", "familiarity/model.safetensors"} <= names
    assert UNRELATED not in names and manifest["familiarity"]


def test_a_hub_banks_evaluation_is_fetched_by_name_and_bounded(banks_dir: Path, calibrated_bank: Path, hub_server,
                                                               hub_repo_id: str, hf_cache: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluation/ is listed and each file named: a glob (evaluation/*.png) also matched nested and huge files."""
    import shutil

    from huggingface_hub import HfApi

    from kf_model.bank import hub

    folder = Path(shutil.copytree(calibrated_bank, tmp_path / "bank"))
    (folder / "evaluation" / "deep").mkdir(parents=True)
    (folder / "evaluation" / "results.json").write_text('{"parameters": {"num_tasks": 0}}')
    (folder / "evaluation" / "results.md").write_text("# Test report\n")
    for name, size in (("leakage.png", 100), ("huge.png", 5000), ("deep/nested.png", 100)):
        (folder / "evaluation" / name).write_bytes(b"\x89PNG" + b"\0" * size)
    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_folder(repo_id=hub_repo_id, folder_path=folder)
    monkeypatch.setattr(hub, "MAX_EVALUATION_FILE_BYTES", 1000)
    entry = BankRegistry(banks_dir, warmup=False).get(hub_repo_id)
    hub_server.clear_log()
    assert entry.fetch_evaluation() is not None
    assert sorted(downloads(hub_server, hub_repo_id)) == ["evaluation/leakage.png", "evaluation/results.json",
                                                          "evaluation/results.md"]
    assert entry.evaluation_results == {"parameters": {"num_tasks": 0}}  # read (and then shown as absent)
    hub_server.clear_log()
    entry.fetch_evaluation()
    assert downloads(hub_server, hub_repo_id) == {}  # once per bank
