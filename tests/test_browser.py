"""The app in a real browser: Debian's Chromium driven by Playwright, headless.

Ticks tasks, uploads an example, draws on the sketchpad with mouse strokes, switches banks, loads a bank
from the (test) Hub, and saves screenshots to test-artifacts/ (look at them: is the layout sensible?).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kf_model import FactorBank
from kf_model.serving import load_examples
from tests.app_fixtures import make_bank, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]  # pandas deprecations inside gradio

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT = 20_000  # ms, for each wait on the page

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():  # pragma: no cover - `make test` installs it
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_app(tmp_path_factory.mktemp("banks")) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url: str) -> Iterator[object]:
    for stale in ARTIFACTS.glob("FAILED-*.png"):
        stale.unlink()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(TIMEOUT)
        page.goto(app_url)
        page.wait_for_selector("#tasks")
        yield page
        browser.close()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest, page) -> Iterator[None]:
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        screenshot(page, f"FAILED-{request.node.name}.png")


def expect(locator):
    return playwright_api.expect(locator)


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(400)  # let the progress overlays fade
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_tick_tasks_upload_an_example_and_see_labels(page, tmp_path: Path) -> None:
    page.locator("#select-none").click()
    expect(page.locator("#summary")).to_contain_text("No task ticked")
    for task in ("shape", "scale"):
        page.locator("#tasks label", has_text=f"{task}:").click()
    expect(page.locator("#summary")).to_contain_text("2 of 5 tasks")

    example = next(e for e in load_examples() if e.dataset == "dsprites" and not e.inverted)
    page.locator("#upload input[type=file]").set_input_files(str(example.path))
    expect(page.locator("#task-label-0")).to_contain_text("shape")
    expect(page.locator("#task-label-0")).to_contain_text(re.compile("square|ellipse|heart"))
    expect(page.locator("#task-label-1")).to_contain_text("scale")
    expect(page.locator("#task-label-2")).to_be_hidden()
    expect(page.locator("#latency")).to_contain_text(re.compile(r"ms on \*?\*?(cpu|cuda)"))
    expect(page.locator("#processed img")).to_be_visible()

    page.locator("#examples .thumbnail-item").nth(1).click()  # a held-out example: its true labels are shown
    expect(page.locator("#truth")).to_contain_text("True labels")
    screenshot(page, "app-dsprites.png")

    page.locator("#export").get_by_text("Export the assembled network").click()
    page.locator("#export-button").click()
    link = page.locator("#export-file a[href$='kf-dsprites-shape-scale.zip']")
    expect(link).to_be_visible()
    archive = tmp_path / "bank.zip"  # the download loads back as a factor bank with only the ticked tasks
    archive.write_bytes(page.request.get(link.get_attribute("href")).body())
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path)
    loaded = FactorBank.from_pretrained(tmp_path / "kf-dsprites-shape-scale")
    assert [t.name for t in loaded.tasks] == ["shape", "scale"]


def test_draw_on_the_sketchpad_and_get_a_prediction(page) -> None:
    page.get_by_role("tab", name="Draw").click()  # opening the tab selects the brush: draw at once
    expect(page.locator("#sketch button[aria-label='Brush']").first).to_have_class(re.compile("highlight"))
    box = page.locator("#sketch canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 50, y - 40)
    page.mouse.down()
    for dx, dy in ((50, -40), (50, 40), (-50, 40), (-50, -40)):  # a closed outline (software rendering: few steps)
        page.mouse.move(x + dx, y + dy, steps=2)
    page.mouse.up()
    # black ink on the white canvas: inverted to light-on-dark before the network sees it
    expect(page.locator("#latency")).to_contain_text("light background")
    expect(page.locator("#task-label-0")).to_contain_text("shape")
    expect(page.locator("#truth")).not_to_contain_text("True labels")  # the example's labels are gone
    screenshot(page, "app-sketch.png")


def test_switch_to_the_fashion_bank_and_get_the_combined_answer(page) -> None:
    page.locator("#bank input").click()
    page.get_by_role("option", name=re.compile("fashion-mnist")).click()
    expect(page.locator("#summary")).to_contain_text("10 of 10 tasks")
    page.get_by_role("tab", name="Upload / paste").click()
    page.locator("#examples .thumbnail-item").last.click()  # the dark-on-white garment
    expect(page.locator("#truth")).to_contain_text("True class")
    expect(page.locator("#combined")).to_be_visible()
    expect(page.locator("#task-label-9")).to_contain_text("ankle_boot")
    expect(page.locator("#latency")).to_contain_text("PNG L 112x112")  # this example, not the previous input
    expect(page.locator("#latency")).to_contain_text("inverted")
    screenshot(page, "app-fashion.png")


def test_hub_loading_from_the_page(page, hub_server, hub_repo_id: str) -> None:
    page.locator("#hub").get_by_text("Load a bank from the Hugging Face Hub").click()
    page.locator("#hub-repo textarea, #hub-repo input").first.fill("kf-tests/no-such-bank")
    page.locator("#hub-load").click()
    expect(page.locator("#bank-message")).to_contain_text("Could not load")
    expect(page.locator("#bank-message")).to_contain_text("keeps working")

    make_bank("dsprites", seed=7).push_to_hub(hub_repo_id)
    page.locator("#hub-repo textarea, #hub-repo input").first.fill(hub_repo_id)
    page.locator("#hub-load").click()
    expect(page.locator("#bank-message")).to_contain_text("downloads only its TSN")
    expect(page.locator("#summary")).to_contain_text("1 of 5 tasks")  # a Hub bank starts with one task ticked
    expect(page.locator("#summary")).to_contain_text("downloaded from the Hub")
    assert "tsn/scale/model.safetensors" not in hub_server.downloaded_files(hub_repo_id)
