"""Shared helpers of the app tests: small untrained factor banks, bad image files, a launched app.

The banks have the real datasets' tasks and input specs (so the examples and the UI logic are the real
ones) but tiny untrained networks, so the tests never depend on the trained bundled banks.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kf_model.bank import FactorBank
from kf_model.data import DSPRITES_INPUT_SPEC, DSPRITES_TASKS, FASHION_MNIST_INPUT_SPEC, FASHION_MNIST_TASKS
from kf_model.models import BackboneConfig, CommonKnowledgeNetwork, EncoderConfig, TaskSpecificNetwork
from kf_model.ui.launching import launch

SPECS = {"dsprites": (DSPRITES_TASKS, DSPRITES_INPUT_SPEC), "fashion-mnist": (FASHION_MNIST_TASKS,
                                                                           FASHION_MNIST_INPUT_SPEC)}


def make_bank(dataset: str, *, seed: int = 0) -> FactorBank:
    """An untrained bank with the dataset's tasks and input spec (a few thousand parameters per factor)."""
    tasks, spec = SPECS[dataset]
    torch.manual_seed(seed)
    coords = dataset == "dsprites"
    backbone = BackboneConfig(arch="cnn", in_channels=spec.channels, width=8, num_stages=3, stem_stride=2,
                              coord_channels=coords, mean=list(spec.mean), std=list(spec.std))
    ckn = CommonKnowledgeNetwork(backbone=vars(backbone))
    encoder = EncoderConfig(in_channels=spec.channels, widths=[8, 16], strides=[2, 2], coord_channels=coords,
                            mean=list(spec.mean), std=list(spec.std))
    tsns = []
    for task in tasks:
        tsn = TaskSpecificNetwork(task=task.to_dict(), encoder=vars(encoder), ckn_width=ckn.width)
        with torch.no_grad():  # random BN statistics, so that outputs depend on the input in interesting ways
            for module in tsn.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1)
        tsns.append(tsn.eval())
    teacher = {"description": f"test teacher for {dataset} (untrained)", "params": 123_456,
               "one_vs_rest": dataset == "fashion-mnist"}
    metrics = {"tasks": {t.name: {"accuracy": 0.5, "teacher_accuracy": 0.6} for t in tasks},
               "summary": {"mean_factor_accuracy": 0.5}}
    return FactorBank.from_modules(ckn, tsns, input_spec=spec, dataset=dataset, teacher=teacher, metrics=metrics)


def write_banks(root: Path, *, evaluation: bool = True) -> Path:
    """``root/dsprites`` and ``root/fashion-mnist`` bank folders; dsprites gets an ``evaluation/`` folder."""
    root.mkdir(parents=True, exist_ok=True)
    for dataset in SPECS:
        folder = make_bank(dataset).save_pretrained(root / dataset)
        if evaluation and dataset == "dsprites":
            ev = folder / "evaluation"
            ev.mkdir()
            Image.fromarray(np.eye(5, dtype=np.uint8) * 255).resize((100, 100)).save(ev / "leakage.png")
            (ev / "results.md").write_text("# Evaluation: dsprites (test)\n\nTest report.\n")
            (ev / "results.json").write_text(json.dumps({"parameters": {
                "num_tasks": 5, "ckn_params": 1000, "tsn_params": [10] * 5, "bank_params": 1050,
                "subset_students_params_paper": 32000, "teacher_params": 5000, "kd_student_params": None}}))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- bad and unusual images

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A few-hundred-byte PNG whose header claims ``width x height`` grey pixels (a decompression bomb's face)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def shape_image(size: int = 64, *, light_background: bool = False) -> np.ndarray:
    """A white filled square on black (or black on white): uint8 [size, size]."""
    array = np.zeros((size, size), np.uint8)
    array[size // 4: 3 * size // 4, size // 3: 2 * size // 3] = 255
    return 255 - array if light_background else array


def write_images(folder: Path) -> dict[str, Path]:
    """Every kind of input the tests throw at the app, written once into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    base = shape_image()
    paths: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **kwargs) -> None:
        paths[name] = folder / name
        image.save(paths[name], **kwargs)

    save("grey.png", Image.fromarray(base))
    save("on_white.png", Image.fromarray(shape_image(light_background=True)))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = base  # black strokes on a transparent background (like a sketch)
    save("rgba.png", Image.fromarray(rgba, mode="RGBA"))
    save("i16.png", Image.fromarray(base.astype(np.uint16) * 257))  # uint16 -> mode "I;16"
    save("cmyk.jpg", Image.fromarray(np.stack([base] * 3, -1)).convert("CMYK"), quality=95)
    save("palette.png", Image.fromarray(base).convert("P"))
    frames = [Image.fromarray(np.roll(base, 5 * i, axis=1)).convert("P") for i in range(3)]
    paths["animated.gif"] = folder / "animated.gif"
    frames[0].save(paths["animated.gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    save("big.png", Image.fromarray(np.kron(base, np.ones((40, 40), np.uint8))))  # 2560x2560, downscaled
    save("wide.png", Image.fromarray(np.full((8, 3000), 255, np.uint8)))  # extreme aspect ratio
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)).save(buffer, "PNG")
    paths["truncated.png"] = folder / "truncated.png"
    paths["truncated.png"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    paths["text.png"] = folder / "text.png"
    paths["text.png"].write_text("this is not an image\n" * 20)
    paths["empty.png"] = folder / "empty.png"
    paths["empty.png"].write_bytes(b"")
    paths["bomb.png"] = png_header_only(folder / "bomb.png", 20_000, 20_000)
    paths["over_limit.png"] = png_header_only(folder / "over_limit.png", 7_000, 7_000)  # 49 MP: warning zone
    return paths


# ----------------------------------------------------------------------------- a running app

@contextmanager
def running_demo(folder: Path, prepare: Callable[[Path], object] | None = None,
                 **demo_options: Any) -> Iterator[tuple[str, object]]:
    """The app on test banks written to ``folder`` (then passed to ``prepare``, if given), launched on a free port
    with the settings of ``python app.py`` (``demo_options`` go to ``build_demo``); yields its URL and the
    ``gr.Blocks`` (``.kf_registry``, ``.kf_gate``)."""
    import app
    from kf_model.serving import BankRegistry

    write_banks(folder)
    if prepare is not None:
        prepare(folder)
    registry = BankRegistry(folder)
    demo = app.build_demo(registry, **demo_options)
    port = free_port()
    launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False,
                **app.launch_kwargs(registry))
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()
        if demo.kf_gate.workers is not None:
            demo.kf_gate.workers.close()


@contextmanager
def running_app(folder: Path, prepare: Callable[[Path], object] | None = None) -> Iterator[str]:
    """:func:`running_demo`, yielding only the URL."""
    with running_demo(folder, prepare) as (url, _):
        yield url
