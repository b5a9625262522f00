"""The app over HTTP, as an API user sees it: launched on a free port, driven with gradio_client."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from kf_model import serving
from kf_model.errors import HubUnavailableError
from kf_model.serving.images import MAX_FILE_BYTES, UPLOAD_MAX_BYTES
from kf_model.serving.memory import MAX_SESSIONS
from tests.app_fixtures import make_bank, running_demo, write_images

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas deprecations inside gradio


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    with running_demo(tmp_path_factory.mktemp("banks")) as served:
        yield served


@pytest.fixture(scope="module")
def app_url(served: tuple[str, object]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


def predict_raw(client: Client, image: Path | None, bank: str, tasks: list[str]) -> dict:
    return client.predict(None if image is None else handle_file(str(image)), bank, tasks, api_name="/predict")


def predict(client: Client, image: Path | None, bank: str, tasks: list[str]) -> dict:
    """The task part of /predict's result (its "_input" report is checked on its own)."""
    result = predict_raw(client, image, bank, tasks)
    assert set(result["_input"]) == {"expects", "familiarity", "unfamiliar", "inverted", "reason", "untested_tasks"}
    return {task: value for task, value in result.items() if task != "_input"}


def test_the_sessions_kept_in_memory_are_bounded(served: tuple[str, object], images: dict[str, Path]) -> None:
    """Every API call is a new Gradio session (each held every component's config, ~0.2 MB, before they were built
    on first use): at most MAX_SESSIONS."""
    url, demo = served
    holder = demo.state_holder  # gradio's per-session store, filled by each event
    assert holder.capacity == MAX_SESSIONS
    holder.capacity = 3
    try:
        for _ in range(6):  # six clients, six sessions
            predict(Client(url, verbose=False), images["grey.png"], "dsprites", ["shape"])
        assert 1 <= len(holder.session_data) <= 3
    finally:
        holder.capacity = MAX_SESSIONS


def test_the_api_has_exactly_one_documented_endpoint(client: Client) -> None:
    info = client.view_api(print_info=False, return_format="dict")
    assert list(info["named_endpoints"]) == ["/predict"]
    assert info["unnamed_endpoints"] == {}
    endpoint = info["named_endpoints"]["/predict"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == ["image", "bank", "tasks"]
    assert [p["component"] for p in endpoint["parameters"]] == ["Image", "Textbox", "Dropdown"]
    assert endpoint["parameters"][2]["python_type"]["type"] == "list[str]"  # any task name, checked by the app
    assert [r["component"] for r in endpoint["returns"]] == ["Json"]


@pytest.mark.parametrize("bank, tasks", [("dsprites", ["shape", "pos_x"]),
                                         ("fashion-mnist", ["coat", "bag", "sneaker"])])
def test_predict_answers_with_task_label_probability_json(client: Client, images: dict[str, Path], bank: str,
                                                          tasks: list[str]) -> None:
    result = predict(client, images["grey.png"], bank, tasks)
    assert set(result) == set(tasks)
    for probabilities in result.values():
        assert all(isinstance(label, str) and 0.0 <= p <= 1.0 for label, p in probabilities.items())
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    if bank == "dsprites":
        assert list(result["shape"]) == ["square", "ellipse", "heart"]
    else:
        assert list(result["coat"]) == ["not Coat", "Coat"]


@pytest.mark.parametrize("name, tasks, message", [
    ("text.png", ["shape"], "not an image"),
    ("truncated.png", ["shape"], "truncated or corrupt"),
    ("bomb.png", ["shape"], "megapixels"),
    ("empty.png", ["shape"], "empty"),
    ("grey.png", ["colour"], "unknown task"),
    (None, ["shape"], "no image"),
])
def test_errors_reach_the_client_with_their_message(client: Client, images: dict[str, Path], name: str | None,
                                                    tasks: list[str], message: str) -> None:
    with pytest.raises(AppError, match=message) as info:
        predict(client, None if name is None else images[name], "dsprites", tasks)
    assert "Traceback" not in str(info.value)


def test_an_empty_task_list_means_every_task(client: Client, images: dict[str, Path]) -> None:
    assert list(predict(client, images["grey.png"], "dsprites", [])) == ["shape", "scale", "orientation", "pos_x",
                                                                          "pos_y"]


def test_the_result_says_what_the_bank_expects(client: Client, images: dict[str, Path]) -> None:
    report = predict_raw(client, images["grey.png"], "fashion-mnist", ["bag"])["_input"]
    assert "garment" in report["expects"] and report["inverted"] is False
    assert report["familiarity"] is None and report["unfamiliar"] is None  # the test banks have no statistics


@pytest.mark.parametrize("name", ["rgba.png", "i16.png", "cmyk.jpg", "palette.png", "animated.gif", "big.png"])
def test_unusual_images_are_converted(client: Client, images: dict[str, Path], name: str) -> None:
    assert list(predict(client, images[name], "fashion-mnist", ["dress"])) == ["dress"]


def test_uploads_over_the_size_cap_are_refused(client: Client, app_url: str, tmp_path: Path,
                                               images: dict[str, Path]) -> None:
    import httpx

    large = tmp_path / "large.png"  # over what is decoded, under Gradio's cap: refused by kf, in words
    large.write_bytes(b"\x89PNG" + b"\0" * (MAX_FILE_BYTES + 1024 * 1024))
    with pytest.raises(AppError, match=r"'large.png' is 26.0 MB; the limit is 25 MB"):
        predict(client, large, "dsprites", ["shape"])
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG" + b"\0" * (UPLOAD_MAX_BYTES + 1024 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client reads the cap from the app
        predict(client, huge, "dsprites", ["shape"])
    with huge.open("rb") as f:  # and the server enforces it
        response = httpx.post(app_url + "gradio_api/upload", files={"files": ("huge.png", f, "image/png")}, timeout=60)
    assert response.status_code == 413
    assert predict(client, images["grey.png"], "dsprites", ["shape"])  # still serving


def test_hub_banks_load_and_failures_leave_the_bundled_bank_working(client: Client, hub_server, hub_repo_id: str,
                                                                    images: dict[str, Path]) -> None:
    make_bank("fashion-mnist", seed=5).push_to_hub(hub_repo_id)
    hub_server.clear_log()
    result = predict(client, images["grey.png"], hub_repo_id, ["bag"])
    assert list(result) == ["bag"] and list(result["bag"]) == ["not Bag", "Bag"]
    assert "tsn/coat/model.safetensors" not in hub_server.downloaded_files(hub_repo_id)  # only the ticked factor
    assert list(predict(client, images["grey.png"], f"{hub_repo_id}@main", ["coat"])) == ["coat"]

    with pytest.raises(AppError, match="not found"):
        predict(client, images["grey.png"], "kf-tests/no-such-bank", ["bag"])
    with pytest.raises(AppError, match="unknown bank"):
        predict(client, images["grey.png"], "no-such-bundled-bank", ["bag"])
    assert list(predict(client, images["grey.png"], "fashion-mnist", ["bag"])) == ["bag"]


def test_the_page_and_the_examples_are_served(app_url: str) -> None:
    import httpx

    page = httpx.get(app_url, timeout=30)
    assert page.status_code == 200 and "kf" in page.text
    config = httpx.get(app_url + "config", timeout=30).json()
    private = [d for d in config["dependencies"] if d.get("api_visibility") == "private"]
    public = [d for d in config["dependencies"] if d.get("api_visibility") == "public"]
    assert [d["api_name"] for d in public] == ["predict"] and len(private) > 5


def test_only_the_newest_prediction_of_a_session_writes_the_outputs() -> None:
    from app import NewestWins

    newest = NewestWins(max_sessions=2)
    older = newest.start("a")
    newer = newest.start("a")  # started while `older` still runs: `older` must not overwrite its answer
    other = newest.start("b")
    assert not newest.is_newest("a", older)
    assert newest.is_newest("a", newer) and newest.is_newest("b", other)
    newest.start("c")  # the least recently active session is forgotten, and nothing of it is then skipped
    assert newest.is_newest("a", older) and newest.is_newest("b", other)


def test_the_readme_deploys_as_a_space_unchanged() -> None:
    import gradio
    from huggingface_hub.repocard import metadata_load

    root = Path(__file__).resolve().parent.parent
    meta = metadata_load(root / "README.md")
    for key in ("title", "emoji", "sdk", "sdk_version", "app_file", "python_version", "suggested_hardware", "models",
                "license", "short_description"):
        assert key in meta, f"README front matter lacks {key!r}"
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__  # the version the tests ran
    assert (root / meta["app_file"]).is_file() and isinstance(meta["models"], list)
    assert len(meta["short_description"]) <= 60  # the Hub's limit


def test_hanging_bank_loads_never_delay_predictions_on_loaded_banks(served: tuple[str, object],
                                                                   images: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: four requests for a hostile Hub bank used to hold all four prediction slots."""
    url, demo = served
    gate = demo.kf_gate
    release = threading.Event()

    def hanging_fetch(repo_id: str, revision: str | None = None, *, token=False):  # a Hub that never answers
        release.wait(120)
        raise HubUnavailableError(f"{repo_id} never answered")

    monkeypatch.setattr(serving.registry, "fetch_manifest", hanging_fetch)
    hostile = gate.loads + gate.waiting_loads  # every load the gate admits
    clients = [Client(url, verbose=False) for _ in range(hostile + 1)]  # one Client per concurrent caller
    try:
        jobs = [client.submit(handle_file(str(images["grey.png"])), f"evil/bank-{i}", ["shape"], api_name="/predict")
                for i, client in enumerate(clients[:hostile])]
        deadline = time.monotonic() + 120  # synchronisation only: turns a hang into a failure
        while gate.loads_in_flight < hostile:
            assert time.monotonic() < deadline, f"only {gate.loads_in_flight} of {hostile} loads started"
            time.sleep(0.01)
        with pytest.raises(AppError, match="busy loading"):  # one more load is refused at once
            predict(clients[-1], images["grey.png"], "evil/one-more", ["shape"])
        normal = clients[-1].submit(handle_file(str(images["grey.png"])), "dsprites", ["shape"], api_name="/predict")
        assert list(normal.result(timeout=120)) == ["shape", "_input"]  # answered while every load still hangs
        assert not any(job.done() for job in jobs)
    finally:
        release.set()
    for job in jobs:
        with pytest.raises(AppError, match="cannot reach the Hugging Face Hub"):
            job.result(timeout=120)


def test_the_app_leaves_no_temporary_folder_behind(tmp_path: Path) -> None:
    """Starting the app, exporting a zip and exiting leaves nothing of kf's in the temp dir."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = """if True:
        import sys, tempfile
        from pathlib import Path
        import app
        from kf_model.serving import BankRegistry
        from tests.app_fixtures import write_banks

        demo = app.build_demo(BankRegistry(write_banks(Path(sys.argv[1])), warmup=False))
        assert not [p for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("kf-")], "made at start"
        export = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_export")
        archive = Path(export("dsprites", ["shape"], "zip"))
        assert archive.is_file() and archive.is_relative_to(tempfile.gettempdir()), archive
        print("exported", archive)
    """
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "banks")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported" in result.stdout
    assert [p.name for p in temp.iterdir() if p.name.startswith("kf-")] == []


def test_predict_is_the_one_mcp_tool_described_by_its_docstring(app_url: str, images: dict[str, Path]) -> None:
    """Agents see /predict as a tool (its docstring and type hints), and no other event of the app."""
    import base64

    import anyio
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    schema = httpx.get(app_url + "gradio_api/mcp/schema", timeout=60).json()
    assert [tool["name"] for tool in schema] == ["predict"]
    tool = schema[0]
    assert tool["description"].startswith("Recognise an image with a factor bank")
    properties = tool["inputSchema"]["properties"]
    assert list(properties) == ["image", "bank", "tasks"]
    assert properties["tasks"]["type"] == "array" and "every task" in properties["tasks"]["description"]

    image = "data:image/png;base64," + base64.b64encode(images["grey.png"].read_bytes()).decode()

    async def call() -> tuple[list[str], str]:
        async with streamable_http_client(app_url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                names = [t.name for t in (await session.list_tools()).tools]
                result = await session.call_tool("predict", {"image": image, "bank": "dsprites", "tasks": ["shape"]})
                assert not result.isError, result.content
                return names, result.content[0].text

    names, text = anyio.run(call)
    assert names == ["predict"]
    assert "'shape': {'square':" in text and "'_input'" in text


def test_the_api_tabs_snippet_runs_as_shown(served: tuple[str, object]) -> None:
    """The API tab's first snippet, run as a visitor would from a checkout of the repository, against the app."""
    import re

    from kf_model.ui.api import api_markdown

    url, demo = served
    code = re.search(r"```python\n(.*?)```", api_markdown(url, demo.kf_context), re.S).group(1)
    assert "/tmp" not in code and str(ROOT) not in code  # a file the reader has, not a path on the server
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line for line in result.stdout.splitlines() if line.startswith("{")]  # after "Loaded as API: ..."
    assert printed[0].startswith("{'square':") and "'expects':" in printed[1], result.stdout
