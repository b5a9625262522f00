"""How the app looks: its CSS, the small page scripts and the theme."""

from __future__ import annotations

import gradio as gr

CSS = """
#examples img, #processed img, #leakage img, #upload img { image-rendering: pixelated; }
#upload img { width: 100%; height: 100%; object-fit: contain; }
#examples .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(56px, 1fr));
                            grid-auto-rows: minmax(56px, 1fr); padding-top: 30px; }
#examples .caption-label { font-size: 11px; padding: 1px 4px; }
#summary table, #explain-metrics table, #explain-params table { font-size: 0.9em; }
#explain-metrics td, #explain-params td, #summary td { white-space: nowrap; }
#explain-metrics, #explain-params { overflow-x: auto; }
#explain-figures img { object-fit: contain !important; }
#answer, #answer .prose, #answer p { font-size: 1.3rem !important; line-height: 1.35; }
#answer p { margin: 0.2em 0; }
/* the theme's own variables: readable in the light and the dark scheme alike */
#familiarity.kf-warn { background: var(--background-fill-secondary); color: var(--body-text-color);
    border: 1px solid var(--secondary-500); border-left-width: 6px; border-radius: 8px; padding: 0.4em 0.7em; }
#familiarity.kf-warn * { color: var(--body-text-color); }
#task-table.kf-guesses table { font-style: italic; opacity: 0.75; }
#task-table.kf-guesses label, #task-table.kf-guesses .label { color: var(--body-text-color); }
.kf-message { padding: 0.3em 0.6em; border-radius: 6px; }
#results { position: relative; transition: opacity 0.15s; }
#results.kf-stale > * { opacity: 0.3; }
#results.kf-stale::before { content: "Reading the new image…"; position: absolute; top: 3em; left: 50%; z-index: 5;
    transform: translateX(-50%); background: var(--background-fill-primary); padding: 0.4em 0.8em 0.4em 2.4em;
    border-radius: 6px; box-shadow: 0 1px 4px rgba(0,0,0,0.2); font-weight: 600; }
#results.kf-stale::after { content: ""; position: absolute; top: 3.35em; left: calc(50% - 6.2em); z-index: 6;
    width: 1em; height: 1em; border: 3px solid #c7d2fe; border-top-color: #4f46e5; border-radius: 50%;
    animation: kf-spin 0.8s linear infinite; }
@keyframes kf-spin { to { transform: rotate(360deg); } }
/* an empty message takes no room (Gradio keeps the block and its gap) */
#image-message:not(:has(p)), #truth:not(:has(p)), #bank-message:not(:has(p)), #hub-message:not(:has(p)) {
    display: none; }
@media (max-width: 640px) {  /* a phone: the image, then its headline and table, on the first screen */
    #intro p, #recognises-column, #bank [data-testid="block-info"], #bank .block-info { display: none; }
    #intro h1 { font-size: 1.05em; margin: 0; }
    #upload { height: 120px !important; }
    #truth, #familiarity, #image-message, #latency { font-size: 0.8em; line-height: 1.25; }
    #answer, #answer .prose, #answer p { font-size: 1rem !important; }
}
@media (max-width: 900px) {  /* a phone, a tablet, a phone held sideways: the whole table in its column */
    #task-table td, #task-table th, #task-table td *, #task-table th * { font-size: 11px !important;
        line-height: 1.25 !important; padding: 1px 3px; white-space: normal; overflow-wrap: anywhere; }
}
"""

# Runs once when the page loads: an image being uploaded or dropped greys the old answers at once (the prediction's own
# progress overlay only starts once the upload has finished); the prediction's end removes the mark.
# A file Gradio refuses itself (over its upload cap, or not an image: a PDF) never reaches the server, and Gradio's
# toast says so: the old answers stay as they are (no upload event would ever clear the grey).
PAGE_JS = """() => {
    const image = (file) => file.type ? file.type.startsWith('image/')
        : /[.](png|jpe?g|gif|webp|bmp|tiff?|ico|heic|heif|avif)$/i.test(file.name);
    const refused = (files) => Array.from(files || []).some((file) => file.size > UPLOAD_MAX_BYTES || !image(file));
    const stale = (event) => {
        if (event.target && event.target.closest && event.target.closest('#upload')) {
            if (refused(event.target.files) || refused(event.dataTransfer?.files)) return;
            document.querySelector('#results')?.classList.add('kf-stale');
        }
    };
    document.addEventListener('change', stale, true);
    document.addEventListener('drop', stale, true);
    document.addEventListener('paste', stale, true);
    // Accessible names: an example is read out by its caption (not "Thumbnail 3 of 7"), the image being answered
    // has alt text (the example's true labels when it is one).
    const name = () => {
        document.querySelectorAll('#examples button.thumbnail-item').forEach((button) => {
            const caption = button.querySelector('img')?.getAttribute('alt');
            if (caption && button.getAttribute('aria-label') !== caption) button.setAttribute('aria-label', caption);
        });
        const image = document.querySelector('#upload img');
        if (image) {
            const truth = document.querySelector('#truth')?.innerText.trim();
            const alt = truth ? 'The image being answered. ' + truth : 'The image being answered';
            if (image.getAttribute('alt') !== alt) image.setAttribute('alt', alt);
        }
    };
    new MutationObserver(name).observe(document.body, {childList: true, subtree: true, characterData: true});
    name();
}"""


def page_js(upload_max_bytes: int) -> str:
    """``PAGE_JS`` with Gradio's upload cap in it."""
    return PAGE_JS.replace("UPLOAD_MAX_BYTES", str(int(upload_max_bytes)))


# A phone scrolled down to the examples: the tapped example's image and answer are 1,000+ px above, out of sight.
SHOW_ANSWER_JS = """() => {
    const image = document.querySelector('#input-tabs');
    if (!image || window.innerWidth > 640) return;
    const box = image.getBoundingClientRect();
    if (box.bottom < 0 || box.top > window.innerHeight) image.scrollIntoView({block: 'start'});
}"""
FRESH_JS = "() => { document.querySelector('#results')?.classList.remove('kf-stale'); }"
STALE_JS = "(value) => { document.querySelector('#results')?.classList.add('kf-stale'); return value; }"
PAGE_URL_JS = "() => window.location.origin + window.location.pathname"
SELECT_BRUSH_JS = """() => {
    let tries = 0;  // the canvas mounts when the tab first opens: retry until the brush is the active tool
    const pick = () => {
        const brush = document.querySelector("#sketch button[aria-label='Brush']");
        if (brush && brush.classList.contains("highlight")) return;
        if (brush) brush.click();
        if (++tries < 30) setTimeout(pick, 150);
    };
    setTimeout(pick, 50);
}"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="amber")
