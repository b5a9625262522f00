"""The app's interface is built of small parts, and only kf_model/ui/ (and app.py) import gradio."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UI = ROOT / "kf_model" / "ui"
MAX_LINES = 80


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_ui_package_imports_gradio() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "kf_model").rglob("*.py")
                 if UI not in p.parents and "gradio" in imported_modules(p)]
    assert offenders == []


@pytest.mark.parametrize("path", [ROOT / "app.py", *sorted(UI.glob("*.py"))], ids=lambda p: p.name)
def test_every_builder_and_handler_is_short(path: Path) -> None:
    tree = ast.parse(path.read_text())
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert long == []


def test_the_sketchpad_label_says_what_to_draw_for_each_kind_of_bank() -> None:
    from types import SimpleNamespace

    from kf_model.ui.image_input import sketch_label

    def entry(dataset: str | None, channels: int) -> SimpleNamespace:
        return SimpleNamespace(manifest=SimpleNamespace(dataset=dataset, input_spec=SimpleNamespace(channels=channels)))

    assert sketch_label(entry("dsprites", 1)) == "Draw a shape: a square, an ellipse or a heart"
    assert sketch_label(entry("fashion-mnist", 1)) == "Draw a garment, a shoe or a bag"
    assert "reads photographs" in sketch_label(entry("photo-everyday", 3))  # a drawing is not what it was shown
    assert sketch_label(entry("digits", 1)) == "Draw something like this bank's images"
    assert sketch_label(None) == "Draw"
