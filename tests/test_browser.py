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
from kf_model.ui.launching import launch
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
playwright_api.expect.set_options(timeout=TIMEOUT)  # a shared 2-core machine: waits are synchronisation, not timing
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
        familiarity_line = page.locator("#familiarity")
        expect(familiarity_line).to_contain_text("Familiarity check passed")  # neutral words, no green tick
        expect(familiarity_line).not_to_contain_text("✔")
        upload(page, colour_photo(tmp_path))
        warning = page.locator("#familiarity")
        expect(warning).to_contain_text("does not look like what the bank was trained on")
        expect(warning).to_contain_text("white shape")  # what it does recognise
        expect(warning).not_to_contain_text("only 0 %")
        expect(page.locator("#latency")).to_contain_text("JPEG RGB 640x480")
        expect(page.locator("#truth")).not_to_contain_text("True labels")  # the example's labels are gone
        table = page.locator("#task-table")  # dSprites has no headline: its answers are greyed, labelled guesses
        expect(table).to_have_class(re.compile("kf-guesses"))
        expect(table).to_contain_text("Guesses only")
        expect(page.locator("#answer")).to_be_hidden()
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
    page.get_by_role("tab", name="Upload / paste").click()  # back: the image in that tab is answered, not the drawing
    expect(page.locator("#latency")).not_to_contain_text("light background")
    expect(page.locator("#task-table")).to_contain_text("shape")


def test_the_sketchpad_says_what_to_draw_for_the_bank_and_still_draws_after_a_switch(page) -> None:
    page.get_by_role("tab", name="Draw").click()
    expect(page.locator("#sketch")).to_contain_text("Draw a shape: a square, an ellipse or a heart")
    choose_bank(page, "fashion-mnist")
    expect(page.locator("#upload img")).to_have_attribute("src", re.compile("fashion-mnist-test"))
    expect(page.locator("#truth")).to_contain_text("True class")
    page.get_by_role("tab", name="Draw").click()
    expect(page.locator("#sketch")).to_contain_text("Draw a garment, a shoe or a bag")
    box = page.locator("#sketch canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 40, y - 60)
    page.mouse.down()
    for dx, dy in ((40, -60), (40, 60), (-40, 60), (-40, -60)):
        page.mouse.move(x + dx, y + dy, steps=2)
    page.mouse.up()
    expect(page.locator("#latency")).to_contain_text("light background")  # the drawing answered by the new bank
    expect(page.locator("#task-table")).not_to_contain_text("shape")
    expect(page.locator("#truth")).not_to_contain_text("True class")


def test_an_empty_canvas_clears_the_answer_of_the_image_beside_it(page) -> None:
    expect(page.locator("#task-table")).to_contain_text("shape")  # the first example's answer
    page.get_by_role("tab", name="Draw").click()
    expect(page.locator("#results")).to_contain_text("Upload, paste or draw an image")
    expect(page.locator("#task-table")).not_to_contain_text("shape")


# ----------------------------------------------------------------------------- API, Explain, Hub, export

def test_the_api_tab_shows_this_pages_url_and_a_runnable_example(page, app_url: str) -> None:
    page.get_by_role("tab", name="API").click()
    help_text = page.locator("#api-help")
    expect(help_text).to_contain_text(f'Client("{app_url}")')
    expect(help_text).to_contain_text("an empty list means every task")
    expect(help_text).to_contain_text("gradio_api/mcp/")
    image = re.search(r'handle_file\("([^"]+)"\)', help_text.inner_text()).group(1)
    assert (ROOT / image).is_file() and not image.startswith("/")  # a file of the repository, not a server path
    expect(help_text).to_contain_text(f"huggingface.co/spaces/OWNER/SPACE/resolve/main/{image}")  # the Space form
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
    message = page.locator("#hub-message")  # under the button, not at the top of the page
    page.locator("#hub-load").click()  # a blank entry
    expect(message).to_contain_text("Type a Hub repo id")
    expect(message).not_to_contain_text("Could not load")
    field.fill("https://huggingface.co/spaces/kf-tests/an-app")
    expect(message).to_be_empty()  # the next action clears the old message
    page.locator("#hub-load").click()
    expect(message).to_contain_text("not a model repo")
    field.fill("a/b@../../x")
    page.locator("#hub-load").click()
    expect(message).to_contain_text("is not a revision")
    expect(message).not_to_contain_text("reach the Hub")
    field.fill("kf-tests/no-such-bank")
    page.locator("#hub-load").click()
    expect(message).to_contain_text("Could not load")
    expect(message).to_contain_text("keeps working")
    assert "Error" not in message.inner_text()  # words, not an exception's name
    box, button = message.bounding_box(), page.locator("#hub-load").bounding_box()
    assert 0 <= box["y"] - (button["y"] + button["height"]) < 80  # right under the button

    make_bank("dsprites", seed=7).push_to_hub(hub_repo_id)
    field.fill(f"{hub_server.url}/{hub_repo_id}/tree/main".replace(hub_server.url, "https://huggingface.co"))
    page.locator("#hub-load").click()
    expect(message).to_contain_text(f"Loaded {hub_repo_id}")
    expect(message).not_to_contain_text("Could not load")  # no stale failure after a success
    expect(page.locator("#bank-message")).to_contain_text("downloads only its TSN")
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
    launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False,
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


# ----------------------------------------------------------------------------- dark scheme, error states, phone

CONTRAST_JS = """(root) => {
    // WCAG contrast of every piece of text inside `root` against the background painted behind it (min over all)
    const ctx = document.createElement('canvas').getContext('2d', {willReadFrequently: true});
    const rgba = (colour) => {
        ctx.clearRect(0, 0, 1, 1); ctx.fillStyle = 'rgba(0,0,0,0)'; ctx.fillStyle = colour; ctx.fillRect(0, 0, 1, 1);
        const d = ctx.getImageData(0, 0, 1, 1).data; return [d[0], d[1], d[2], d[3] / 255];
    };
    const over = (top, bottom) => top.slice(0, 3).map((c, i) => c * top[3] + bottom[i] * (1 - top[3]));
    const background = (element) => {
        const layers = [];
        for (let e = element; e; e = e.parentElement) {
            const c = rgba(getComputedStyle(e).backgroundColor);
            if (c[3] > 0) { layers.push(c); if (c[3] === 1) break; }
        }
        let colour = layers.length && layers[layers.length - 1][3] === 1 ? layers.pop().slice(0, 3) : [255, 255, 255];
        while (layers.length) colour = over(layers.pop(), colour);
        return colour;
    };
    const luminance = (rgb) => {
        const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]);
    };
    let lowest = Infinity, count = 0;
    for (const element of [root, ...root.querySelectorAll('*')]) {
        const own = [...element.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
        if (!own || !element.getClientRects().length) continue;
        const back = background(element);
        const fg = over(rgba(getComputedStyle(element).color), back);
        const [a, b] = [luminance(fg), luminance(back)];
        lowest = Math.min(lowest, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05));
        count += 1;
    }
    return {lowest, count};
}"""


def contrast(page, selector: str) -> float:
    """The lowest WCAG contrast ratio of the text inside ``selector`` (4.5 is AA for body text)."""
    result = page.locator(selector).evaluate(CONTRAST_JS)
    assert result["count"] > 0, f"no text in {selector}"
    return result["lowest"]


def test_dark_scheme_keeps_the_warning_and_the_answer_readable(browser, app_url: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    page = browser.new_page(viewport=DESKTOP, color_scheme="dark")
    page.set_default_timeout(TIMEOUT)
    try:
        page.goto(app_url, timeout=3 * TIMEOUT)
        expect(page.locator("#task-table")).to_contain_text("shape", timeout=3 * TIMEOUT)
        assert page.evaluate("document.querySelector('.dark') !== null")  # Gradio follows the scheme
        choose_bank(page, "fashion-mnist")
        expect(page.locator("#answer")).to_be_visible()
        page.wait_for_timeout(400)
        assert contrast(page, "#answer") >= 4.5
        screenshot(page, "dark-answer.png", full_page=False)
        upload(page, colour_photo(tmp_path))
        expect(page.locator("#familiarity")).to_contain_text("does not look like")
        expect(page.locator("#results")).not_to_have_class(re.compile("kf-stale"))
        page.wait_for_timeout(400)
        assert contrast(page, "#familiarity") >= 4.5
        screenshot(page, "dark-warning.png", full_page=False)
    finally:
        failed(page, request)
        page.close()


def test_a_flagged_image_on_a_headline_bank_shows_no_headline(page, tmp_path: Path) -> None:
    choose_bank(page, "fashion-mnist")
    expect(page.locator("#answer")).to_be_visible()
    upload(page, colour_photo(tmp_path))
    expect(page.locator("#familiarity")).to_contain_text("No answer is given")
    expect(page.locator("#answer")).to_be_hidden()  # nothing looks certain
    expect(page.locator("#task-table")).to_have_class(re.compile("kf-guesses"))
    screenshot(page, "desktop-flagged-garment.png", full_page=False)


def test_a_file_that_is_not_an_image_is_refused_beside_it_and_the_page_stays_usable(page, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\n" * 20)
    upload(page, bad)
    message = page.locator("#image-message")
    expect(message).to_contain_text("not an image")
    expect(page.locator("#results")).not_to_have_class(re.compile("kf-stale"))  # no endless spinner
    expect(page.locator("#task-table")).not_to_contain_text("shape")  # the old answers are gone
    expect(page.locator(".toast-body")).to_have_count(0)
    expect(page.locator("#results .error")).to_have_count(0)  # no red badges
    image_box, message_box = page.locator("#upload").bounding_box(), message.bounding_box()
    assert abs(message_box["y"] - (image_box["y"] + image_box["height"])) < 120  # beside the image
    screenshot(page, "desktop-not-an-image.png", full_page=False)
    page.wait_for_timeout(11_000)  # Gradio's toasts vanish after ~10 s: the message stays
    expect(message).to_contain_text("not an image")
    from PIL import Image

    good = tmp_path / "square.png"
    Image.fromarray(shape_image()).save(good)
    upload(page, good)  # still usable: the next image is answered and the message goes
    expect(page.locator("#task-table")).to_contain_text("shape")
    expect(message).not_to_contain_text("not an image")


def test_a_photo_over_what_the_app_reads_is_refused_beside_it_in_megabytes(page, tmp_path: Path) -> None:
    """Between what kf decodes and Gradio's upload cap, the file reaches the app and is refused in words beside the
    image; over Gradio's cap the old answers are not greyed (no upload event would ever clear them)."""
    from kf_model.serving.images import MAX_FILE_BYTES, UPLOAD_MAX_BYTES

    large = tmp_path / "large-photo.png"
    large.write_bytes(b"\x89PNG" + b"\0" * (MAX_FILE_BYTES + 1024 * 1024))
    upload(page, large)
    expect(page.locator("#image-message")).to_contain_text("is 26.0 MB; the limit is 25 MB")
    expect(page.locator("#results")).not_to_have_class(re.compile("kf-stale"))
    for name, size in (("huge-photo.png", UPLOAD_MAX_BYTES + 1024 * 1024), ("scan.pdf", 2048)):
        refused = tmp_path / name  # over Gradio's cap, or not an image: Gradio's toast, no upload
        refused.write_bytes(b"%PDF" + b"\0" * size)
        upload(page, refused)
        expect(page.locator(".toast-body")).not_to_have_count(0)
        expect(page.locator("#results")).not_to_have_class(re.compile("kf-stale"))


def test_an_upload_runs_the_prediction_once(page, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "once.png"
    Image.fromarray(shape_image(light_background=True)).save(path)
    joins = []
    page.on("request", lambda r: joins.append(r.post_data or "") if "queue/join" in r.url else None)
    upload(page, path)
    expect(page.locator("#latency")).to_contain_text("light background")
    page.wait_for_timeout(1500)  # a second request would come right after the first
    assert len([j for j in joins if "once.png" in j]) == 1, joins


def test_the_bank_dropdown_takes_its_choices_only(page) -> None:
    field = page.locator("#bank input")
    before = field.input_value()
    for typed in ("../../etc", "nonexistent-bank"):
        field.click()
        field.fill(typed)
        field.press("Enter")
        page.locator("#intro").click()  # leave the field
        expect(field).to_have_value(before)  # reverted
    expect(page.locator(".toast-body")).to_have_count(0)
    expect(page.locator("#task-table")).to_contain_text("shape")  # the bank still answers
    expect(page.locator("#results")).not_to_have_class(re.compile("kf-stale"))


def test_a_second_click_on_an_example_answers_at_once(page) -> None:
    """Its answer was kept (serving.ExampleAnswers): the same table, said to be kept, no network pass."""
    choose_bank(page, "fashion-mnist")  # ten rows of P(class): two garments' answers differ somewhere
    expect(page.locator("#truth")).to_contain_text("True class")
    rows, thumbnails = page.locator("#task-table div[role=row]"), page.locator("#examples button.thumbnail-item")
    expect(rows.first).to_be_visible()
    shown = [rows.all_inner_texts()]  # the bank's first example
    for index in (3, 5):  # each new example's answer replaces the last one's
        thumbnails.nth(index).click()
        expect(rows).not_to_have_text(shown[-1])
        shown.append(rows.all_inner_texts())
    thumbnails.nth(3).click()
    expect(rows).to_have_text(shown[1])
    expect(page.locator("#latency")).to_contain_text("Answered at once")
    expect(page.locator(".toast-body")).to_have_count(0)


def test_examples_and_the_image_have_accessible_names(page) -> None:
    first = page.locator("#examples button.thumbnail-item").first
    caption = first.locator("img").get_attribute("alt")
    assert caption and "Thumbnail" not in caption
    expect(first).to_have_attribute("aria-label", caption)  # read out by its caption
    expect(page.locator("#upload img")).to_have_attribute("alt", re.compile("The image being answered. True labels"))
    page.locator("#upload button[aria-label='Remove Image']").click()  # the example's labels go with its image
    expect(page.locator("#truth")).not_to_contain_text("True labels")
    expect(page.locator("#task-table")).not_to_contain_text("shape")


@pytest.mark.parametrize("how", ["example", "upload"])
def test_phone_first_screen_shows_the_headline_and_the_whole_table(phone, how: str) -> None:
    choose_bank(phone, "fashion-mnist")
    expect(phone.locator("#answer")).to_be_visible()
    if how == "example":
        phone.locator("#examples button.thumbnail-item").nth(3).click()
        expect(phone.locator("#truth")).to_contain_text("True class")
    else:
        example = next(e for e in load_examples() if e.dataset == "fashion-mnist" and not e.inverted)
        upload(phone, example.path)
        expect(phone.locator("#truth")).not_to_contain_text("True class")
    expect(phone.locator("#answer")).to_be_visible()
    phone.evaluate("window.scrollTo(0, 0)")
    screenshot(phone, f"phone-first-screen-{how}.png", full_page=False)
    answer = phone.locator("#answer").bounding_box()
    row = phone.locator("#task-table [role=row]").nth(2).bounding_box()  # the header and the first two rows
    assert answer["y"] + answer["height"] <= PHONE["height"] and row["y"] + row["height"] <= PHONE["height"]
    cells = phone.locator("#task-table thead th")
    last = cells.nth(cells.count() - 1).bounding_box()
    assert last["x"] + last["width"] <= PHONE["width"] + 1  # the details column is not cut


@pytest.mark.parametrize("viewport", [{"width": 768, "height": 1024}, {"width": 844, "height": 390}],
                         ids=["tablet", "phone-landscape"])
def test_between_phone_and_desktop_widths_the_whole_table_shows(browser, app_url: str, viewport: dict,
                                                               request: pytest.FixtureRequest) -> None:
    """641-900 px (a tablet, a phone held sideways): two columns side by side, the table's details column not cut."""
    page = open_page(browser, app_url, viewport)
    try:
        choose_bank(page, "fashion-mnist")
        expect(page.locator("#truth")).to_contain_text("True class")
        page.locator("#task-table").scroll_into_view_if_needed()
        screenshot(page, f"{request.node.callspec.id}-table.png", full_page=False)
        table = page.locator("#task-table").bounding_box()
        last = page.locator("#task-table thead th").last.bounding_box()
        assert last["x"] + last["width"] <= table["x"] + table["width"] + 1  # the details column is not cut
        assert last["x"] + last["width"] <= viewport["width"] + 1
    finally:
        failed(page, request)
        page.close()


def test_a_phone_tapping_an_example_far_down_is_brought_back_to_its_answer(phone) -> None:
    """The examples sit ~1,500 px below the answer on a phone: the tapped example's image and answer, changed out
    of sight, are scrolled into view."""
    thumbnail = phone.locator("#examples button.thumbnail-item").nth(2)
    thumbnail.scroll_into_view_if_needed()
    expect(phone.locator("#input-tabs")).not_to_be_in_viewport()
    thumbnail.click()
    expect(phone.locator("#truth")).to_contain_text("True labels")
    expect(phone.locator("#input-tabs")).to_be_in_viewport()
