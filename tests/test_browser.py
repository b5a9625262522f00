"""The app in a real browser, as a visitor meets it: Debian's Chromium driven by Playwright, headless.

Desktop (1366x768) and phone (390x844) viewports. Every test starts from a freshly loaded page and saves a
screenshot to test-artifacts/ (look at them: is the layout sensible?). The test banks are small untrained
networks with familiarity statistics fitted here; ``KF_UPDATE_SCREENSHOT=1`` also renders the README's
screenshot (docs/screenshot.png) from the bundled banks.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from kf_model import FactorBank
from kf_model.serving import BankRegistry, familiarity, familiarity_check, load_examples
from tests.app_fixtures import make_bank, running_app, shape_image

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]  # pandas deprecations inside gradio

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
README_SCREENSHOT = ROOT / "docs" / "screenshot.png"
TIMEOUT = 20_000  # ms, for each wait on the page
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():  # pragma: no cover - `make test` installs it
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def calibrate_banks(folder: Path) -> None:
    """Familiarity statistics for the test banks, from a few hundred images of their datasets."""
    for bank in ("dsprites", "fashion-mnist"):
        familiarity.calibrate(folder / bank, train_limit=512, test_limit=256)


@pytest.fixture(scope="module")
def banks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("banks")
    with running_app(folder, prepare=calibrate_banks) as url:
        yield url, folder


@pytest.fixture(scope="module")
def app_url(banks: tuple[str, Path]) -> str:
    return banks[0]


@pytest.fixture(scope="module")
def registry(banks: tuple[str, Path]) -> BankRegistry:
    """The same banks as the app's, to know in advance what the app must answer."""
    return BankRegistry(banks[1], allow_hub=False, warmup=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    for stale in ARTIFACTS.glob("FAILED-*.png"):
        stale.unlink()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


def open_page(browser, url: str, viewport: dict[str, int]):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(TIMEOUT)
    page.goto(url, timeout=3 * TIMEOUT)
    # the example answered on load (a generous wait: the first page of a run also warms the app up)
    expect(page.locator("#task-table")).to_contain_text("shape", timeout=3 * TIMEOUT)
    return page


@pytest.fixture
def page(browser, app_url: str, request: pytest.FixtureRequest) -> Iterator[object]:
    page = open_page(browser, app_url, DESKTOP)
    yield page
    failed(page, request)
    page.close()


@pytest.fixture
def phone(browser, app_url: str, request: pytest.FixtureRequest) -> Iterator[object]:
    page = open_page(browser, app_url, PHONE)
    yield page
    failed(page, request)
    page.close()


def failed(page, request: pytest.FixtureRequest) -> None:
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        screenshot(page, f"FAILED-{request.node.name}.png")


def expect(locator):
    return playwright_api.expect(locator)


def screenshot(page, name: str, *, full_page: bool = True, path: Path | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(400)  # let the progress overlays fade
    page.screenshot(path=str(path or ARTIFACTS / name), full_page=full_page)


def upload(page, path: Path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))


def colour_photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    familiarity_check.synthetic_photos(1, seed=3)[0].save(path, quality=90)
    return path


def choose_bank(page, name: str) -> None:
    page.locator("#bank input").click()
    page.get_by_role("option", name=re.compile(name)).click()


def top(page, selector: str) -> float:
    return page.locator(selector).first.bounding_box()["y"]


# ----------------------------------------------------------------------------- first screen and layout

def test_desktop_first_screen_answers_an_example(page) -> None:
    expect(page.locator("#truth")).to_contain_text("True labels")
    expect(page.locator("#recognises")).to_contain_text("white shape")
    expect(page.locator("#latency")).to_contain_text(re.compile(r"ms on \*?\*?(cpu|cuda)"))
    expect(page.locator("#answer")).to_be_hidden()  # dSprites: no one-vs-rest answer; the table says it all
    assert top(page, "#results") < DESKTOP["height"]  # the answer is on the first screen, beside the image
    assert top(page, "#task-table") < DESKTOP["height"]
    screenshot(page, "desktop-first-screen.png", full_page=False)
    screenshot(page, "desktop.png")


def test_phone_shows_the_image_then_its_answer_before_tasks_and_accounting(phone) -> None:
    image, results = top(phone, "#upload"), top(phone, "#results")
    assert image < results < top(phone, "#tasks-box") < top(phone, "#accounting")
    assert image < 0.6 * PHONE["height"] and results < 1.2 * PHONE["height"]  # not 2,700 px down
    screenshot(phone, "phone-first-screen.png", full_page=False)
    screenshot(phone, "phone.png")


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_a_colour_photo_gets_the_unfamiliar_warning(browser, app_url: str, viewport: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    page = open_page(browser, app_url, DESKTOP if viewport == "desktop" else PHONE)
    try:
        expect(page.locator("#familiarity")).to_contain_text("Looks like the bank's training data")
        upload(page, colour_photo(tmp_path))
        warning = page.locator("#familiarity")
        expect(warning).to_contain_text("does not look like what the bank was trained on")
        expect(warning).to_contain_text("white shape")  # what it does recognise
        expect(page.locator("#latency")).to_contain_text("JPEG RGB 640x480")
        expect(page.locator("#truth")).not_to_contain_text("True labels")  # the example's labels are gone
        screenshot(page, f"{viewport}-colour-photo.png")
    finally:
        failed(page, request)
        page.close()


# ----------------------------------------------------------------------------- answers

def test_none_of_the_ticked_classes(page, registry: BankRegistry, tmp_path: Path) -> None:
    path = tmp_path / "square.png"
    from PIL import Image

    Image.fromarray(shape_image()).save(path)
    prediction = registry.predict(str(path), "fashion-mnist", registry.get("fashion-mnist").task_names)
    unlikely = [task for task in prediction.tasks if prediction.positive(task)[1] < 0.5][:2]
    assert len(unlikely) == 2, prediction.combined()

    choose_bank(page, "fashion-mnist")  # a new bank shows its own example, not the old image
    expect(page.locator("#truth")).to_contain_text("True class")
    expect(page.locator("#upload img")).to_have_attribute("src", re.compile("fashion-mnist-test"))
    expect(page.locator("#answer")).to_be_visible()
    page.locator("#select-none").click()
    expect(page.locator("#latency")).to_contain_text("Tick at least one task")
    page.locator("#tasks label", has_text=f"{unlikely[0]}:").click()
    expect(page.locator("#task-table")).to_contain_text(unlikely[0])
    expect(page.locator("#answer")).to_be_hidden()  # one task ticked: its row is the answer
    page.locator("#tasks label", has_text=f"{unlikely[1]}:").click()
    upload(page, path)
    expect(page.locator("#answer")).to_contain_text("None of the 2 ticked classes")
    expect(page.locator(".toast-body")).to_have_count(0)  # the bank switch sent no stale task to the new bank
    expect(page.locator("#tasks-box")).to_contain_text("Tasks (2 ticked)")
    screenshot(page, "desktop-none-of-the-ticked.png")


def test_a_new_upload_greys_the_old_answers_until_its_own_arrive(page, tmp_path: Path) -> None:
    held = []
    page.route("**/gradio_api/upload**", lambda route: held.append(route))  # hold the upload: a slow connection
    path = tmp_path / "new.png"
    from PIL import Image

    Image.fromarray(shape_image(light_background=True)).save(path)
    upload(page, path)
    expect(page.locator("#results")).to_have_class(re.compile("kf-stale"))  # greyed, with a spinner, at once
    screenshot(page, "desktop-uploading.png", full_page=False)
    assert held, "the upload request was not seen"
    held[0].continue_()
    page.unroute("**/gradio_api/upload**")
    expect(page.locator("#latency")).to_contain_text("light background")  # the new image's answer
    expect(page.locator("#results")).not_to_have_class(re.compile("kf-stale"))
    expect(page.locator("#truth")).not_to_contain_text("True labels")


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
    expect(page.locator("#task-table")).to_contain_text("shape")
    expect(page.locator("#truth")).not_to_contain_text("True labels")
    screenshot(page, "desktop-sketch.png")


# ----------------------------------------------------------------------------- API, Explain, Hub, export

def test_the_api_tab_shows_this_pages_url_and_a_runnable_example(page, app_url: str) -> None:
    page.get_by_role("tab", name="API").click()
    help_text = page.locator("#api-help")
    expect(help_text).to_contain_text(f'Client("{app_url}")')
    expect(help_text).to_contain_text("an empty list means every task")
    image_url = re.search(r'handle_file\("([^"]+)"\)', help_text.inner_text()).group(1)
    assert image_url.startswith(app_url)
    response = page.request.get(image_url)  # the example image of the snippet exists and is served
    assert response.ok and response.body()[:4] == b"\x89PNG"
    screenshot(page, "desktop-api.png")


def test_explain_follows_the_ticked_tasks(page) -> None:
    page.locator("#select-none").click()
    page.locator("#tasks label", has_text="scale:").click()
    page.get_by_role("tab", name="Explain").click()
    metrics = page.locator("#explain-metrics")
    expect(metrics).to_contain_text("1 ticked of 5 tasks")
    expect(metrics).to_contain_text("50.00 %")
    expect(metrics).not_to_contain_text("teacher_accuracy")
    expect(page.locator("#explain-params")).to_contain_text("CKN S + 1 TSN")
    expect(page.locator("#leakage img")).to_be_visible()
    screenshot(page, "desktop-explain.png")


def test_hub_loading_from_the_page(page, hub_server, hub_repo_id: str) -> None:
    page.locator("#hub").get_by_text("Load a bank from the Hugging Face Hub").click()
    field = page.locator("#hub-repo textarea, #hub-repo input").first
    field.fill("https://huggingface.co/spaces/kf-tests/an-app")
    page.locator("#hub-load").click()
    expect(page.locator("#bank-message")).to_contain_text("not a model repo")
    field.fill("kf-tests/no-such-bank")
    page.locator("#hub-load").click()
    message = page.locator("#bank-message")
    expect(message).to_contain_text("Could not load")
    expect(message).to_contain_text("keeps working")
    assert "Error" not in message.inner_text()  # words, not an exception's name

    make_bank("dsprites", seed=7).push_to_hub(hub_repo_id)
    field.fill(f"{hub_server.url}/{hub_repo_id}/tree/main".replace(hub_server.url, "https://huggingface.co"))
    page.locator("#hub-load").click()
    expect(message).to_contain_text("downloads only its TSN")
    expect(page.locator("#tasks-box")).to_contain_text("Tasks (1 ticked)")  # a Hub bank starts with one task
    page.locator("#accounting").get_by_text("Parameter accounting").click()
    expect(page.locator("#summary")).to_contain_text("downloaded from the Hub")
    expect(page.locator("#drawing svg")).to_be_visible()  # the CKN + ticked TSN drawing
    expect(page.locator("#task-table")).to_contain_text("shape")  # its own example, answered
    assert "tsn/scale/model.safetensors" not in hub_server.downloaded_files(hub_repo_id)
    screenshot(page, "desktop-hub.png")


def test_export_the_assembled_network(page, tmp_path: Path) -> None:
    page.locator("#select-none").click()
    for task in ("shape", "scale"):
        page.locator("#tasks label", has_text=f"{task}:").click()
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
    page.locator("#export-kind").get_by_text("ONNX (.onnx)").click()  # the same tasks as one ONNX file
    page.locator("#export-button").click()
    onnx_link = page.locator("#export-file a[href$='kf-dsprites-shape-scale.onnx']")
    expect(onnx_link).to_be_visible(timeout=60_000)
    model = onnx.load_from_string(page.request.get(onnx_link.get_attribute("href")).body())
    assert [output.name for output in model.graph.output] == ["shape", "scale"]


# ----------------------------------------------------------------------------- the README's picture

@pytest.mark.skipif(os.environ.get("KF_UPDATE_SCREENSHOT") != "1", reason="set KF_UPDATE_SCREENSHOT=1 to render it")
def test_render_the_readme_screenshot_from_the_bundled_banks(browser) -> None:
    import app
    from tests.app_fixtures import free_port

    registry = BankRegistry()
    demo = app.build_demo(registry)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False,
                **app.launch_kwargs(registry))
    try:
        page = open_page(browser, f"http://127.0.0.1:{port}/", DESKTOP)
        choose_bank(page, "fashion-mnist")
        expect(page.locator("#upload img")).to_have_attribute("src", re.compile("fashion-mnist-test"))
        expect(page.locator("#answer")).to_be_visible()
        example = next(e for e in load_examples() if e.dataset == "fashion-mnist" and e.caption == "Sneaker")
        upload(page, example.path)
        expect(page.locator("#answer")).to_contain_text("Sneaker")
        expect(page.locator(".toast-body")).to_have_count(0)  # no error on the way
        page.locator("#truth").evaluate("e => e.scrollIntoView()")
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "readme.png", full_page=False, path=README_SCREENSHOT)
        page.close()
    finally:
        demo.close()
