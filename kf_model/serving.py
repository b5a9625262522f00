"""Everything the app does, minus the UI: image checks, preprocessing, banks, prediction, export.

``app.py`` only builds the Gradio interface on top of :class:`BankRegistry`; this module imports no
gradio, so tests call the prediction function directly.

- **Images** (:func:`open_image`, :func:`prepare_image`): any file PIL reads, refused with an
  :class:`~kf_model.errors.InvalidImageError` that says why when it is not an image, truncated, empty or
  larger than :data:`MAX_IMAGE_PIXELS` (decompression bombs are caught from the header, before decoding).
  Palette, CMYK, 16-bit, transparent and animated images are converted (first frame; transparency
  composited onto the background that contrasts with the drawing); large images are downscaled to
  :data:`WORKING_SIDE` before the bank's own preprocessing. Light-background images (a drawing on white)
  are inverted to the datasets' light-on-dark convention when ``invert=None``.
- **Banks** (:class:`BankRegistry`): the bundled banks of ``assets/factors/`` are loaded once, moved to
  the device once; Hub banks are fetched lazily: the manifest first, then only the CKN and the TSNs of
  the tasks asked for. Assembled networks are cached per (bank, task set).
- **Prediction** (:meth:`BankRegistry.predict`): one preprocessing, one forward pass (CUDA autocast when on
  a GPU, under ``spaces.GPU`` on ZeroGPU Spaces), softmax per task. :class:`PredictionGate` runs bank loads
  apart from predictions, each with its own limit, so a slow or hostile bank never delays the others.

``python -m kf_model.serving examples`` renders the example images of ``assets/examples/``.
"""

from __future__ import annotations

try:  # ZeroGPU Spaces: `spaces` must be imported before CUDA is initialised; elsewhere it is not needed
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

import argparse
import contextlib
import functools
import html
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from kf_model.bank import CONFIG_FILE, FAMILIARITY_DIR, MANIFEST_FILE, WEIGHTS_FILE, FactorBank, Manifest
from kf_model.bank import fetch_manifest as fetch_bank_manifest
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import (
    BankNotFoundError,
    BusyError,
    HubUnavailableError,
    InvalidImageError,
    KFError,
    UnknownTaskError,
    name_list,
    quoted,
)
from kf_model.familiarity import FamiliarityModel, describe_input, pooled_features
from kf_model.models.factor import AssembledNetwork
from kf_model.utils import count_parameters

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = ROOT / "assets"
FACTORS_DIR = ASSETS_DIR / "factors"
EXAMPLES_DIR = ASSETS_DIR / "examples"
EXAMPLES_FILE = "examples.json"
EVALUATION_DIR = "evaluation"

MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: any phone photo, far from a decompression bomb
MAX_FILE_BYTES = 10 * 1024 * 1024  # also the app's upload cap (launch(max_file_size=...))
WORKING_SIDE = 1024  # larger images are downscaled to this side before preprocessing (networks read <= 64 px)
TOP_K = 3
PREVIEW_SIDE = 224  # the processed image is shown upscaled (nearest neighbour) to at least this side
MAX_HUB_BANKS = 8  # Hub banks kept in memory (least recently used dropped first)
MAX_NETWORKS = 64  # assembled networks cached per bank (2^n task subsets exist)
MAX_BANK_KEY = 256  # "owner/name@revision": Hub repo ids have at most 96 characters, revisions are short
LOADS = 2  # bank loads at once (PredictionGate); MAX_WAITING_LOADS more may wait, further ones are refused
MAX_WAITING_LOADS = 8
INPUT_KEY = "_input"  # /predict's result: this key reports on the input (familiarity), every other is a task

# Pillow refuses larger images at open time (DecompressionBombError above 2x, a warning above 1x);
# open_image also checks the header size itself, so the limit holds whatever a caller did to this global.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")
_COLOUR_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")


class RequestError(KFError, ValueError):
    """A request that cannot be answered as it is: no image, no task ticked."""


# ============================================================================ images

def open_image(path: str | os.PathLike | None) -> tuple[Image.Image, list[str]]:
    """Open, check and fully decode an image file -> (a loaded copy of its first frame, notes for the user).

    Every refusal is an :class:`InvalidImageError` (or :class:`RequestError` for no image at all) whose
    message is written for a person; no PIL exception escapes.
    """
    if path is None or str(path) == "":
        raise RequestError("no image: upload a picture, paste one from the clipboard or draw on the sketchpad")
    file = Path(path)
    if not file.is_file():
        raise InvalidImageError(f"the image file {file.name!r} does not exist (was the upload interrupted?)")
    size = file.stat().st_size
    if size == 0:
        raise InvalidImageError(f"{file.name!r} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise InvalidImageError(f"{file.name!r} is {size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                _check_pixels(image.size)
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    image.seek(0)
                    notes.append(f"animated image ({frames} frames): the first frame is used")
                if image.format == "JPEG" and max(image.size) > 2 * WORKING_SIDE:
                    image.draft(image.mode, (WORKING_SIDE, WORKING_SIDE))  # decode at a reduced scale: faster
                image.load()
                loaded = image.copy()  # the copy outlives the file (closing the original destroys its data)
                loaded.info = dict(image.info)
                if image.format:
                    notes.insert(0, f"{image.format} {image.mode} {image.size[0]}x{image.size[1]}")
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(
            f"{file.name!r} is too large: more than {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (a possible "
            "decompression bomb); the networks only read 28-64 px, so a smaller picture works as well"
        ) from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"{file.name!r} is not an image this app can read (use PNG, JPEG, GIF, WebP, BMP or TIFF)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise InvalidImageError(f"{file.name!r} is truncated or corrupt and cannot be decoded ({error})") from None
    return loaded, notes


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"the image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(
            f"the image is {width}x{height} = {width * height / 1e6:.0f} megapixels; the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (the networks only read 28-64 px anyway)"
        )


def prepare_image(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any PIL image -> a new 8-bit "L" or "RGB" image of at most WORKING_SIDE px, plus notes on what changed.

    An image already in "L"/"RGB" and small enough is only copied, so a dataset image reaches
    ``bank.preprocess`` unchanged and gives exactly the dataset's tensor.
    """
    _check_pixels(image.size)
    notes: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    transposed = ImageOps.exif_transpose(image)
    if transposed is not None and transposed is not image and transposed.size != image.size:
        notes.append("rotated according to its EXIF orientation")
    image = transposed if transposed is not None else image
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        notes.append("palette image converted to RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode in _COLOUR_MODES:
        image = image.convert("RGB")
        notes.append(f"{mode} image converted to RGB")
    elif mode in _SIXTEEN_BIT or mode in ("I", "F"):
        image = _high_depth_to_l(image)
        notes.append(f"{'16-bit' if mode in _SIXTEEN_BIT else mode + '-mode'} image scaled to 8 bits")
    elif mode not in ("L", "RGB", *_ALPHA_MODES):
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as error:
            raise InvalidImageError(f"unsupported image mode {mode!r}: save it as an RGB or grey PNG/JPEG") from error
        notes.append(f"{mode} image converted to RGB")
    if image.mode in _ALPHA_MODES:
        image, note = _flatten_transparency(image)
        notes += [note] if note else []
    if max(image.size) > WORKING_SIDE:
        original = image.size
        image = image.copy()
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
        notes.append(f"downscaled from {original[0]}x{original[1]} to {image.size[0]}x{image.size[1]}")
    if image.mode not in ("L", "RGB"):  # pragma: no cover - every branch above ends in L or RGB
        image = image.convert("RGB")
    return image.copy(), notes


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float grey -> 8-bit "L", scaled as ``kf_model.preprocess`` scales them."""
    array = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        scaled = array if array.max(initial=0.0) <= 1.0 else array / 255.0
    else:
        top = 65535.0 if image.mode in _SIXTEEN_BIT or array.max(initial=0.0) > 255 else 255.0
        scaled = array / top
    return Image.fromarray(np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def _flatten_transparency(image: Image.Image) -> tuple[Image.Image, str]:
    """Composite transparency onto black or white, whichever contrasts with the visible content.

    A light object on a transparent background lands on black (the datasets' convention); dark strokes
    (a drawing in black ink) land on white, and the light-background rule then inverts them.
    """
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:4]
    colour = rgba[..., :3]
    weight = float(alpha.sum())
    if weight < 1e-6:
        return Image.new("RGB", image.size, (0, 0, 0)), "fully transparent image: blank"
    luma = _luma(colour)
    content = float((luma * alpha[..., 0]).sum() / weight)
    background = 1.0 if content < 0.5 else 0.0
    flat = colour * alpha + background * (1.0 - alpha)
    flat_image = Image.fromarray(np.round(flat * 255.0).astype(np.uint8), mode="RGB")
    if float(alpha.min()) >= 1.0:
        return flat_image, ""
    return flat_image, f"transparency composited onto {'white' if background else 'black'}"


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of [..., 3] floats, element-wise (a matmul would start BLAS threads that fight torch's)."""
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def is_light_background(image: Image.Image, spec: InputSpec) -> bool:
    """The rule of ``image_to_tensor(invert=None)``: the mean of the border pixels is above 0.5."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    if spec.channels == 1 and array.shape[2] == 3:
        array = _luma(array)[..., None]
    border = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel()])
    return float(border.mean()) > 0.5


def is_blank(image: Image.Image | None) -> bool:
    """True for no image, or one whose pixels are all the same (an untouched sketchpad)."""
    if image is None:
        return True
    if image.mode in _ALPHA_MODES and image.mode != "PA":
        alpha = image.getchannel("A")
        if alpha.getextrema()[1] == 0:
            return True
    extrema = image.getextrema()
    if isinstance(extrema[0], tuple):
        return all(low == high for low, high in extrema)
    return extrema[0] == extrema[1]


def tensor_to_preview(tensor: torch.Tensor, side: int = PREVIEW_SIDE) -> Image.Image:
    """[1, C, H, W] or [C, H, W] in [0,1] -> a PIL image upscaled by an integer factor (nearest neighbour)."""
    array = tensor.detach().float().cpu().reshape(-1, *tensor.shape[-2:]).clamp(0, 1).numpy()
    array = np.round(array * 255.0).astype(np.uint8)
    image = Image.fromarray(array[0], mode="L") if array.shape[0] == 1 else Image.fromarray(
        array[:3].transpose(1, 2, 0), mode="RGB")
    factor = max(1, math.ceil(side / max(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


# ============================================================================ devices

def pick_device(name: str | None = None) -> torch.device:
    """``name``, else $KF_DEVICE, else CUDA when available, else CPU."""
    name = name or os.environ.get("KF_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        try:
            return f"cuda ({torch.cuda.get_device_name(device)}, {autocast_dtype()} autocast)".replace(
                "torch.", "")
        except (RuntimeError, AssertionError):  # ZeroGPU: no device outside a GPU call
            return "cuda"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def autocast_dtype() -> torch.dtype:
    """The app's CUDA autocast dtype: bf16 where the GPU has it, else fp16 (the benchmark uses the same)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _forward(network: AssembledNetwork, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass -> ({task: probabilities [num_classes]}, pooled CKN features [1, D]), on the CPU, float32.

    The features come from the same pass (the CKN runs once): they feed the familiarity score.
    """
    device = x.device
    autocast = (torch.autocast("cuda", dtype=autocast_dtype()) if device.type == "cuda"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        output = network(x, return_features=True)
    probabilities = {name: value.float().softmax(dim=-1)[0] for name, value in output.tsn.logits.items()}
    features = pooled_features(output.ckn)
    if device.type == "cuda":  # one sync, after the pass
        probabilities = {name: value.cpu() for name, value in probabilities.items()}
        features = features.cpu()
    return probabilities, features


if spaces is not None:  # ZeroGPU: the GPU is attached only inside functions wrapped by spaces.GPU
    _forward = spaces.GPU(duration=20)(_forward)


# ============================================================================ banks

@dataclass
class BankEntry:
    """A bank the registry knows: bundled (a folder, fully loaded) or on the Hub (loaded task by task)."""

    key: str  # what the dropdown and the API call it: "dsprites", or "org/repo" / "org/repo@revision"
    kind: str  # "bundled" or "hub"
    manifest: Manifest
    folder: Path  # the bank folder, or the Hub cache snapshot holding the files downloaded so far
    device: torch.device
    repo_id: str | None = None
    revision: str | None = None  # as asked (None: the default branch)
    commit: str | None = None  # the commit every Hub file is pinned to
    token: str | bool | None = False
    bank: FactorBank | None = None
    networks: OrderedDict[tuple[str, ...], AssembledNetwork] = field(default_factory=OrderedDict)
    lock: threading.RLock = field(default_factory=threading.RLock)  # the caches; never held while loading
    load_lock: threading.Lock = field(default_factory=threading.Lock)  # one load of this bank at a time
    _evaluation_fetched: bool = False

    # ------------------------------------------------------------------ facts from the manifest
    @property
    def tasks(self) -> list[TaskSpec]:
        return list(self.manifest.tasks)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.manifest.tasks]

    @property
    def dataset(self) -> str | None:
        return self.manifest.dataset

    @property
    def one_vs_rest(self) -> bool:
        """Tasks are the K classes of one K-way label ("is it class i?"): positive class = index 1."""
        teacher = self.manifest.teacher or {}
        if not self.tasks or any(t.num_classes != 2 for t in self.tasks):
            return False
        return bool(teacher.get("one_vs_rest")) or self.dataset == "fashion-mnist" or all(
            t.labels[0] == f"not {t.labels[1]}" for t in self.tasks)

    @property
    def label(self) -> str:
        name = self.dataset or "custom"
        where = "bundled" if self.kind == "bundled" else "Hub"
        return f"{self.key} ({name}, {len(self.tasks)} tasks, {where})"

    @property
    def evaluation_dir(self) -> Path | None:
        """The bank's ``evaluation/`` folder: bundled banks' own; a Hub bank's once :meth:`fetch_evaluation` ran."""
        folder = self.folder / EVALUATION_DIR
        return folder if folder.is_dir() else None

    @property
    def input_description(self) -> str:
        return describe_input(self.manifest)

    @functools.cached_property
    def familiarity(self) -> FamiliarityModel | None:
        """The bank's familiarity statistics (``familiarity/``), downloaded at the manifest's commit for a Hub
        bank; None for a bank without them (the app then says it cannot tell)."""
        if not self.manifest.familiarity:
            return None
        try:
            if self.kind == "hub":
                self._fetch([f"{FAMILIARITY_DIR}/*"])
            return FamiliarityModel.load(self.folder, self.manifest.ckn_fingerprint)
        except KFError as error:
            log.warning("%s: familiarity statistics not loaded: %s", self.key, error)
            return None

    def fetch_evaluation(self) -> Path | None:
        """A Hub bank's ``evaluation/`` folder (tables and figures; downloaded once, at the pinned commit)."""
        if self.kind == "hub" and not self._evaluation_fetched:
            self._evaluation_fetched = True
            try:
                self._fetch([f"{EVALUATION_DIR}/*.md", f"{EVALUATION_DIR}/*.json", f"{EVALUATION_DIR}/*.png"])
            except KFError as error:
                log.warning("%s: evaluation not downloaded: %s", self.key, error)
            self.__dict__.pop("evaluation_results", None)
        return self.evaluation_dir

    def _fetch(self, patterns: list[str]) -> None:
        """Download files of a Hub bank matching ``patterns`` into its snapshot folder (same commit)."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError

        from kf_model.bank import TRANSPORT_ERRORS

        _refuse_local_path(self.repo_id)
        try:
            snapshot_download(self.repo_id, revision=self.commit, allow_patterns=patterns, token=self.token)
        except (HfHubHTTPError, *TRANSPORT_ERRORS) as error:
            raise HubUnavailableError(f"cannot download {patterns} of {self.key}") from error

    # ------------------------------------------------------------------ loading
    def canonical(self, tasks: Iterable[str] | str | None) -> list[str]:
        """The requested tasks, checked and in the bank's order; refuses an empty or unknown selection."""
        if tasks is None:
            tasks = []
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",")]
        wanted = [str(t) for t in tasks if str(t).strip()]
        if not wanted:
            raise RequestError(f"no task ticked: choose at least one of {name_list(self.task_names)}")
        known = set(self.task_names)
        unknown = [t for t in dict.fromkeys(wanted) if t not in known]
        if unknown:
            raise UnknownTaskError(
                f"unknown task(s) {name_list(unknown)} for bank {self.key!r}; "
                f"its tasks are: {name_list(self.task_names)}")
        chosen = set(wanted)
        return [name for name in self.task_names if name in chosen]

    def is_loaded(self, tasks: Iterable[str] | str | None) -> bool:
        """Whether predicting these tasks reads no file: they are loaded, or the request is refused anyway."""
        try:
            names = self.canonical(tasks)
        except KFError:
            return True
        bank = self.bank
        return bank is not None and set(names) <= set(bank.tsns)

    def ensure(self, tasks: Sequence[str]) -> FactorBank:
        """The bank with at least these tasks loaded on the device (downloads only what is missing).

        A load holds only ``load_lock``: predictions of tasks already loaded never wait for a slow one.
        """
        bank = self.bank
        if bank is not None and set(tasks) <= set(bank.tsns):
            return bank
        with self.load_lock:
            bank = self.bank  # another thread may have loaded them meanwhile
            loaded = set(bank.tsns) if bank is not None else set()
            if bank is not None and set(tasks) <= loaded:
                return bank
            if self.kind == "bundled":  # pragma: no cover - bundled banks are loaded whole at start
                bank = FactorBank.from_pretrained(self.folder, device=self.device)
            else:
                union = [name for name in self.task_names if name in loaded or name in tasks]
                _refuse_local_path(self.repo_id)
                bank = FactorBank.from_pretrained(self.repo_id, tasks=union, revision=self.commit,
                                                  token=self.token, device=self.device)
            with self.lock:
                self.bank = bank
                self.networks.clear()
            return bank

    def network(self, tasks: Sequence[str]) -> AssembledNetwork:
        """The assembled network of these (canonical) tasks, cached; built on the bank's device."""
        key = tuple(tasks)
        with self.lock:
            network = self.networks.get(key)
            if network is not None:
                self.networks.move_to_end(key)
                return network
        network = self.ensure(tasks).assemble(tasks).to(self.device).eval()  # no lock held: may load
        with self.lock:
            network = self.networks.setdefault(key, network)
            self.networks.move_to_end(key)
            while len(self.networks) > MAX_NETWORKS:
                self.networks.popitem(last=False)
            return network

    # ------------------------------------------------------------------ accounting
    def files(self, tasks: Sequence[str]) -> list[Path]:
        """The files a load of these tasks reads: manifest, CKN, and each task's TSN (config + weights)."""
        names = [MANIFEST_FILE, f"ckn/{CONFIG_FILE}", f"ckn/{WEIGHTS_FILE}"]
        names += [f"tsn/{t}/{f}" for t in tasks for f in (CONFIG_FILE, WEIGHTS_FILE)]
        return [self.folder / name for name in names]

    def bytes_loaded(self, tasks: Sequence[str]) -> int:
        return sum(path.stat().st_size for path in self.files(tasks) if path.exists())

    def parameter_counts(self, tasks: Sequence[str]) -> dict[str, int]:
        bank = self.ensure(tasks)
        return {"ckn": count_parameters(bank.ckn), **{t: count_parameters(bank.tsns[t]) for t in tasks}}

    def teacher_parameters(self) -> int | None:
        """The teacher's size, from the manifest's teacher summary (written by factorize.py) if recorded."""
        value = (self.manifest.teacher or {}).get("params")
        return value if isinstance(value, int) else None

    @functools.cached_property
    def evaluation_results(self) -> dict[str, Any] | None:
        """``evaluation/results.json`` of a bundled bank (read once), or None."""
        folder = self.evaluation_dir
        if folder is None or not (folder / "results.json").is_file():
            return None
        try:
            return json.loads((folder / "results.json").read_text())
        except (OSError, ValueError):
            log.warning("cannot read %s", folder / "results.json")
            return None

def _refuse_local_path(repo_id: str | None) -> None:
    """A Hub id that is also a local folder would be loaded from disk by FactorBank.from_pretrained: refuse."""
    if repo_id is None or Path(repo_id).exists() or repo_id.startswith((".", "/", "~")):
        raise BankNotFoundError(f"{repo_id!r} is not a Hub repo id this app loads (it names a local path)")


def parse_bank_key(key: str) -> tuple[str, str | None]:
    """"org/repo@revision" -> ("org/repo", "revision"); "org/repo" -> ("org/repo", None)."""
    repo, _, revision = key.strip().partition("@")
    return repo.strip(), (revision.strip() or None)


_HUB_URL = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<path>[^?#]*?)/?(?:[?#].*)?$")


def parse_hub_reference(text: str | None, revision: str | None = None) -> str:
    """What a person pastes -> a bank key ``owner/name[@revision]``.

    Accepts ``owner/name``, ``owner/name@revision`` and ``https://huggingface.co/owner/name[/tree/revision]``
    (also hf.co); ``revision`` (a separate field) applies when the text names none. Refuses, in words,
    anything else (a Space or dataset URL, a file link, a bare name).
    """
    text = (text or "").strip()
    revision = (revision or "").strip() or None
    if not text:
        raise BankNotFoundError("type a Hub repo id such as 'owner/name', or paste its huggingface.co address")
    match = _HUB_URL.match(text)
    if match:
        parts = [p for p in match.group("path").split("/") if p]
        if parts and parts[0] in ("spaces", "datasets"):
            raise BankNotFoundError(f"{text!r} is a {parts[0][:-1]}, not a model repo: factor banks are model repos")
        if parts and parts[0] == "models":
            parts = parts[1:]
        if len(parts) == 2:
            return f"{parts[0]}/{parts[1]}" + (f"@{revision}" if revision else "")
        if len(parts) >= 4 and parts[2] == "tree":
            return f"{parts[0]}/{parts[1]}@{'/'.join(parts[3:])}"
        raise BankNotFoundError(f"{text!r} is not the address of a model repo (expected "
                                "https://huggingface.co/owner/name or .../owner/name/tree/revision)")
    if "://" in text or (text.count("/") != 1 and "@" not in text):
        raise BankNotFoundError(f"{text!r} is not a Hub repo id: expected 'owner/name' or 'owner/name@revision'")
    repo, given = parse_bank_key(text)
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise BankNotFoundError(f"{text!r} is not a Hub repo id: expected 'owner/name' or 'owner/name@revision'")
    chosen = given or revision
    return repo + (f"@{chosen}" if chosen else "")


def plain_message(error: KFError) -> str:
    """A refusal in words for the UI and the API: no library exception text (a raw "ConnectError: [Errno -2]"
    helps nobody; the server log has it)."""
    if isinstance(error, HubUnavailableError):
        cause = error.__cause__
        response = getattr(cause, "response", None)
        status = getattr(response, "status_code", None)
        if status is not None:
            return (f"the Hugging Face Hub refused the request (HTTP {status}); check the repo id and, for a "
                    "private repo, the token")
        return "cannot reach the Hugging Face Hub (no network connection, or the Hub is down); try again later"
    return str(error)


def fetch_manifest(repo_id: str, revision: str | None = None, *, token: str | bool | None = False
                   ) -> tuple[Manifest, Path, str]:
    """Download only ``factors.json`` of a Hub bank -> (manifest, snapshot folder, commit sha)."""
    _refuse_local_path(repo_id)
    hub = fetch_bank_manifest(repo_id, revision, token=token)
    return hub.manifest, hub.folder, hub.commit


class BankRegistry:
    """The banks the app serves: bundled ones (loaded at start) and Hub ones (loaded on demand, cached).

    Thread-safe: Gradio calls it from several worker threads at once.
    """

    def __init__(self, factors_dir: str | os.PathLike | None = FACTORS_DIR, *, device: str | torch.device | None = None,
                 allow_hub: bool = True, default_repo: str | None = None, default_revision: str | None = None,
                 warmup: bool = True) -> None:
        self.device = pick_device(None if device is None else str(device))
        self.allow_hub = allow_hub
        self.factors_dir = None if factors_dir is None else Path(factors_dir)
        self.bundled: dict[str, BankEntry] = {}
        self.problems: list[str] = []  # bundled banks that failed to load, for the UI to show
        self._hub: OrderedDict[str, BankEntry] = OrderedDict()
        self._lock = threading.RLock()
        self._trusted: set[str] = set()
        if self.factors_dir is not None and self.factors_dir.is_dir():
            for folder in sorted(p for p in self.factors_dir.iterdir() if (p / MANIFEST_FILE).is_file()):
                try:
                    self.bundled[folder.name] = self._load_bundled(folder, warmup)
                except KFError as error:
                    log.warning("bundled bank %s not loaded: %s", folder, error)
                    self.problems.append(f"bundled bank {folder.name!r} not loaded: {error}")
        self.default: str | None = next(iter(self.bundled), None)
        if default_repo:
            key = default_repo if default_revision is None else f"{default_repo}@{default_revision}"
            self._trusted.add(parse_bank_key(key)[0])
            try:
                self.default = self.get(key).key
            except KFError as error:
                log.warning("KF_REPO %s not loaded: %s", key, error)
                self.problems.append(f"default bank {key!r} not loaded ({error}); using the bundled banks")

    @classmethod
    def from_env(cls, factors_dir: str | os.PathLike | None = None, **kwargs: Any) -> BankRegistry:
        """$KF_FACTORS_DIR (bundled banks), $KF_REPO/$KF_REVISION (default bank), $KF_ALLOW_HUB=0 (no Hub)."""
        directory = factors_dir or os.environ.get("KF_FACTORS_DIR") or FACTORS_DIR
        return cls(directory, default_repo=os.environ.get("KF_REPO") or None,
                   default_revision=os.environ.get("KF_REVISION") or None,
                   allow_hub=os.environ.get("KF_ALLOW_HUB", "1").lower() not in ("0", "false", "no"), **kwargs)

    def _load_bundled(self, folder: Path, warmup: bool) -> BankEntry:
        bank = FactorBank.from_pretrained(folder, device=self.device)
        entry = BankEntry(key=folder.name, kind="bundled", manifest=bank.manifest, folder=folder, device=self.device,
                          bank=bank)
        if warmup and spaces is None:  # on ZeroGPU the GPU exists only inside a request
            network = entry.network(entry.task_names)
            spec = bank.input_spec
            _forward(network, torch.zeros(1, spec.channels, spec.size, spec.size, device=self.device))
        return entry

    # ------------------------------------------------------------------ lookup
    @property
    def keys(self) -> list[str]:
        with self._lock:
            return [*self.bundled, *self._hub]

    def cached(self, key: str | None) -> BankEntry | None:
        """The bank ``key`` names if using it needs no download, else None; refuses, without any I/O, a name
        that is no bank of this app."""
        key, canonical = self._canonical_key(key)
        if key in self.bundled:
            return self.bundled[key]
        with self._lock:
            entry = self._hub.get(canonical)
            if entry is not None:
                self._hub.move_to_end(canonical)
            return entry

    def _canonical_key(self, key: str | None) -> tuple[str, str]:
        """(the key as given, stripped; its Hub form "owner/name[@revision]"), refusing names this app cannot serve."""
        key = (key or "").strip()
        if not key:
            if self.default is None:
                raise RequestError("no bank chosen, and this app has no bundled bank: load one from the Hub")
            key = self.default
        if key in self.bundled:
            return key, key
        known = name_list(self.bundled) or "none"
        if len(key) > MAX_BANK_KEY:
            raise BankNotFoundError(f"unknown bank {quoted(key)} ({len(key):,} characters): give a bundled bank "
                                    f"({known}) or a Hub repo id 'owner/name[@revision]'")
        repo_id, revision = parse_bank_key(key)
        if not self.allow_hub:
            raise BankNotFoundError(f"unknown bank {quoted(key)}: this app serves only its bundled banks ({known})")
        if "/" not in repo_id:
            raise BankNotFoundError(
                f"unknown bank {quoted(key)}: give a bundled bank ({known}) or a Hub repo id 'owner/name[@revision]'")
        return key, repo_id if revision is None else f"{repo_id}@{revision}"

    def get(self, key: str | None, *, refresh: bool = False) -> BankEntry:
        """A bundled bank by name, or a Hub bank by "owner/name[@revision]" (its manifest fetched once)."""
        if not refresh and (entry := self.cached(key)) is not None:
            return entry
        key, canonical = self._canonical_key(key)
        if key in self.bundled:
            return self.bundled[key]
        repo_id, revision = parse_bank_key(canonical)
        token: str | bool | None = None if repo_id in self._trusted else False  # never lend the app's token
        manifest, folder, commit = fetch_manifest(repo_id, revision, token=token)
        entry = BankEntry(key=canonical, kind="hub", manifest=manifest, folder=folder, device=self.device,
                          repo_id=repo_id, revision=revision, commit=commit, token=token)
        with self._lock:
            self._hub[canonical] = entry
            while len(self._hub) > MAX_HUB_BANKS:
                self._hub.popitem(last=False)
        return entry

    def load(self, bank: str | None, tasks: Iterable[str] | str | None) -> BankEntry:
        """Fetch what predicting ``tasks`` of ``bank`` needs (the manifest, the CKN and these TSNs) -> the bank."""
        entry = self.get(bank)
        entry.ensure(entry.canonical(tasks))
        return entry

    # ------------------------------------------------------------------ prediction
    def predict(self, image: str | os.PathLike | Image.Image | None, bank: str | BankEntry | None,
                tasks: Iterable[str] | str | None, *, invert: bool | None = None) -> Prediction:
        """Run the assembled network of ``tasks`` of ``bank`` on one image (a file path or a PIL image)."""
        start = time.perf_counter()
        _require_image(image)
        entry = bank if isinstance(bank, BankEntry) else self.get(bank)
        names = entry.canonical(tasks)
        if isinstance(image, Image.Image):
            source, notes = image, []
        else:
            source, notes = open_image(image)
        prepared, more = prepare_image(source)
        notes += more
        spec = entry.manifest.input_spec
        inverted = is_light_background(prepared, spec) if invert is None else bool(invert)
        if inverted and invert is None:
            notes.append("light background: inverted to light-on-dark, like the training data")
        network = entry.network(names)  # loads (downloads) the factors if needed: not counted as latency
        t0 = time.perf_counter()
        x = entry.ensure(names).preprocess(prepared, invert=inverted)
        t1 = time.perf_counter()
        probabilities, features = _forward(network, x)
        t2 = time.perf_counter()
        familiarity = entry.familiarity.score(features)[0] if entry.familiarity is not None else None
        labels = {task.name: task.labels for task in entry.tasks}
        result = {name: dict(zip(labels[name], probabilities[name].tolist(), strict=True)) for name in names}
        return Prediction(bank=entry.key, tasks=names, probabilities=result, processed=x[0].detach().cpu(),
                          inverted=inverted, notes=notes, one_vs_rest=entry.one_vs_rest,
                          timings={"preprocess_ms": 1000 * (t1 - t0), "network_ms": 1000 * (t2 - t1),
                                   "total_ms": 1000 * (time.perf_counter() - start)},
                          device=describe_device(x.device), familiarity=familiarity,
                          expects=entry.input_description)

    def api_predict(self, image: str | os.PathLike | None, bank: str | None,
                    tasks: Iterable[str] | str | None) -> dict[str, Any]:
        """The public endpoint: ``{task: {label: probability}, "_input": {...}}`` (auto-inversion of light
        backgrounds). No task (None, [] or "") means every task of the bank."""
        if no_tasks(tasks):
            tasks = self.get(bank).task_names
        return api_result(self.predict(image, bank, tasks))

    # ------------------------------------------------------------------ export
    def export_zip(self, bank: str | None, tasks: Iterable[str] | str | None,
                   out_dir: str | os.PathLike) -> Path:
        """A zip, written into ``out_dir``, of a factor-bank folder holding only these tasks;
        ``FactorBank.from_pretrained`` loads it back once unzipped (one top folder, named after the bank and
        tasks). The caller owns ``out_dir`` (and removes it): this method leaves no temporary file behind."""
        entry = self.get(bank)
        names = entry.canonical(tasks)
        subset = entry.ensure(names).subset(names)
        stem = _slug(f"kf-{entry.dataset or entry.key}-{'-'.join(names) if len(names) <= 3 else f'{len(names)}tasks'}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = subset.save_pretrained(Path(tmp) / stem)
            archive = out / f"{stem}.zip"
            with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        zf.write(path, Path(stem) / path.relative_to(folder))
        return archive


def no_tasks(tasks: Iterable[str] | str | None) -> bool:
    """None, [] or "" (the API's "every task")."""
    return not tasks or (isinstance(tasks, str) and not tasks.strip())


def api_result(prediction: Prediction) -> dict[str, Any]:
    """What ``/predict`` returns: ``{task: {label: probability}}`` plus the report on the input (``_input``)."""
    return {**prediction.to_json(), INPUT_KEY: prediction.input_report()}


def _require_image(image: object) -> None:
    if image is None or (isinstance(image, str) and not image):
        raise RequestError("no image: upload a picture, paste one from the clipboard or draw on the sketchpad")


class PredictionGate:
    """Predictions and bank loads with separate limits, so that a slow (or hostile) load never holds a
    prediction slot.

    At most ``predictions`` forward passes run at once; at most ``loads`` bank loads run at once and
    ``waiting_loads`` more wait for one of them; a request that needs a load beyond that is refused at once
    (:class:`~kf_model.errors.BusyError`). Requests on banks already loaded never wait for a load: the app
    gives its prediction events ``capacity`` slots, so ``predictions`` of them stay free whatever loads do.
    """

    def __init__(self, registry: BankRegistry, *, predictions: int = 4, loads: int = LOADS,
                 waiting_loads: int = MAX_WAITING_LOADS) -> None:
        if predictions < 1 or loads < 1 or waiting_loads < 0:
            raise ValueError(f"PredictionGate needs predictions >= 1, loads >= 1, waiting_loads >= 0; got "
                             f"{predictions}, {loads}, {waiting_loads}")
        self.registry = registry
        self.predictions, self.loads, self.waiting_loads = predictions, loads, waiting_loads
        self.capacity = predictions + loads + waiting_loads
        self._predictions = threading.BoundedSemaphore(predictions)
        self._loads = threading.BoundedSemaphore(loads)
        self._loads_in_flight = 0
        self._count_lock = threading.Lock()

    @property
    def loads_in_flight(self) -> int:
        """Loads running or waiting to run."""
        with self._count_lock:
            return self._loads_in_flight

    def load(self, bank: str | None, tasks: Iterable[str] | str | None) -> BankEntry:
        """``registry.load`` under the load limit; refuses at once when the load slots and their queue are full."""
        return self._limited(lambda: self.registry.load(bank, tasks))

    def _limited(self, load: Callable[[], BankEntry]) -> BankEntry:
        with self._count_lock:
            if self._loads_in_flight >= self.loads + self.waiting_loads:
                raise BusyError(f"the app is busy loading {self._loads_in_flight} other banks; try again in a "
                                "moment (banks already loaded keep answering)")
            self._loads_in_flight += 1
        try:
            with self._loads:
                return load()
        finally:
            with self._count_lock:
                self._loads_in_flight -= 1

    def api_predict(self, image: str | os.PathLike | None, bank: str | None,
                    tasks: Iterable[str] | str | None) -> dict[str, Any]:
        """``registry.api_predict`` through the gate: no task means every task (a Hub manifest fetched for that
        counts as a load)."""
        _require_image(image)
        if no_tasks(tasks):
            entry = self.registry.cached(bank) or self._limited(lambda: self.registry.get(bank))
            tasks = entry.task_names
        return api_result(self.predict(image, bank, tasks))

    def predict(self, image: str | os.PathLike | Image.Image | None, bank: str | None,
                tasks: Iterable[str] | str | None, *, invert: bool | None = None) -> Prediction:
        """``registry.predict``, loading first (outside the prediction slots) what the request needs."""
        _require_image(image)
        entry = self.registry.cached(bank)
        if entry is None or not entry.is_loaded(tasks):
            entry = self.load(bank, tasks)
        with self._predictions:
            return self.registry.predict(image, entry, tasks, invert=invert)


class ScratchDir:
    """A temporary folder made on first use and removed with this object or at exit, whichever comes first.

    A server that never exports leaves nothing in the temp dir, and one that does leaves nothing once it stops.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._path: Path | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    @property
    def path(self) -> Path:
        with self._lock:
            if self._path is None or not self._path.is_dir():
                self._path = Path(tempfile.mkdtemp(prefix=self.prefix))
                self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, ignore_errors=True)
            return self._path

    def cleanup(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._path = self._finalizer = None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:100]


@dataclass
class Prediction:
    """One answered request."""

    bank: str
    tasks: list[str]
    probabilities: dict[str, dict[str, float]]  # {task: {label: probability}}, every class
    processed: torch.Tensor  # [C, H, W] in [0,1]: what the network saw
    inverted: bool
    notes: list[str]
    one_vs_rest: bool
    timings: dict[str, float]
    device: str
    familiarity: dict[str, Any] | None = None  # FamiliarityModel.score() of this image, None: no statistics
    expects: str = ""  # what a good input looks like, in words

    @property
    def unfamiliar(self) -> bool:
        return bool(self.familiarity and self.familiarity["unfamiliar"])

    def input_report(self) -> dict[str, Any]:
        """The ``_input`` part of /predict's result: the familiarity check and what the bank expects."""
        report: dict[str, Any] = {"expects": self.expects, "inverted": self.inverted}
        if self.familiarity is None:
            report.update(familiarity=None, unfamiliar=None)
        else:
            report.update(familiarity=self.familiarity["familiarity"], unfamiliar=self.familiarity["unfamiliar"])
        return report

    def answer(self) -> tuple[str, dict[str, float]] | None:
        """One-vs-rest banks with 2+ ticked tasks: (the one answer in words, {class: P(class)}); else None.

        "None of the ticked classes" when no class is more likely than not: the argmax alone would name a
        class that its own factor says the image is not.
        """
        combined = self.combined()
        if combined is None or len(combined) < 2:
            return None
        best, p = max(combined.items(), key=lambda item: item[1])
        if p <= 0.5:
            return (f"None of the {len(combined)} ticked classes (the likeliest, {best}, is at {p:.0%})",
                    combined)
        return f"{best} ({p:.0%})", combined

    def table(self) -> list[list[Any]]:
        """One row per task: [task, answer, probability in %, runners-up]; compact and sortable."""
        rows = []
        for task in self.tasks:
            ranked = self.top(task, TOP_K)
            if self.one_vs_rest:
                label, p = self.positive(task)
                verdict = label if p > 0.5 else next(iter(self.probabilities[task]))  # labels: ["not X", "X"]
                rows.append([task, verdict, round(100 * max(p, 1 - p), 1), f"P({label}) = {p:.1%}"])
            else:
                label, p = ranked[0]
                rows.append([task, label, round(100 * p, 1), ", ".join(f"{lab} {q:.0%}" for lab, q in ranked[1:])])
        return rows

    def to_json(self, digits: int = 6) -> dict[str, dict[str, float]]:
        return {task: {label: round(p, digits) for label, p in probs.items()}
                for task, probs in self.probabilities.items()}

    def top(self, task: str, k: int = TOP_K) -> list[tuple[str, float]]:
        return sorted(self.probabilities[task].items(), key=lambda item: -item[1])[:k]

    def positive(self, task: str) -> tuple[str, float]:
        """One-vs-rest banks: (class name, P(it is that class)); the positive class is index 1."""
        label = list(self.probabilities[task])[1]
        return label, self.probabilities[task][label]

    def combined(self) -> dict[str, float] | None:
        """One-vs-rest banks: {class name: P(positive)} over the ticked classes (argmax = the answer)."""
        if not self.one_vs_rest:
            return None
        return dict(self.positive(task) for task in self.tasks)

    def confidences(self) -> list[dict[str, Any]]:
        """Rows for a bar plot: per task, P(positive) for one-vs-rest banks, else the top class's probability."""
        rows = []
        for task in self.tasks:
            if self.one_vs_rest:
                label, p = self.positive(task)
                rows.append({"bar": label, "task": task, "class": label, "confidence": p})
            else:
                label, p = self.top(task, 1)[0]
                rows.append({"bar": f"{task}: {label}", "task": task, "class": label, "confidence": p})
        return rows

    def preview(self, side: int = PREVIEW_SIDE) -> Image.Image:
        return tensor_to_preview(self.processed, side)


# ============================================================================ text for the UI

def format_count(n: int | None) -> str:
    return "not recorded" if n is None else f"{n:,}"


def format_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def summary_markdown(entry: BankEntry, tasks: Iterable[str] | str | None) -> str:
    """The live summary of the assembled network for the ticked tasks."""
    try:
        names = entry.canonical(tasks)
    except RequestError:
        return "**No task ticked.** Tick at least one task to assemble a network."
    counts = entry.parameter_counts(names)
    ckn = counts["ckn"]
    tsns = [counts[n] for n in names]
    k = len(names)
    assembled = ckn + sum(tsns)
    separate = k * ckn + sum(tsns)
    teacher = entry.teacher_parameters()
    loaded = entry.bytes_loaded(names)
    where = "read from disk" if entry.kind == "bundled" else "downloaded from the Hub"
    lines = [
        f"**Assembled network: {k} of {len(entry.tasks)} tasks** — the CKN runs once, each ticked TSN adds its task.",
        "",
        "| network | parameters |",
        "|---|---:|",
        f"| assembled: CKN (S) + {k} TSN{'s' if k > 1 else ''} | **{assembled:,}** |",
        f"| {k} separate factor network{'s' if k > 1 else ''}, k·(S+s) | {separate:,} |",
        f"| teacher (all {len(entry.tasks)} tasks) | {format_count(teacher)} |",
        f"| CKN S / mean TSN s | {ckn:,} / {sum(tsns) // k:,} |",
        "",
        f"Files {where}: **{format_bytes(loaded)}** (manifest, CKN and {k} TSN{'s' if k > 1 else ''}).",
    ]
    if k > 1:
        lines.append(f"Sharing the CKN saves {1 - assembled / separate:.0%} of the parameters of "
                     f"{k} separate factor networks.")
    return "\n".join(lines)


def assembly_svg(entry: BankEntry, tasks: Iterable[str] | str | None, max_boxes: int = 10) -> str:
    """A small drawing (inline SVG in HTML) of the assembled network: the CKN once, the ticked TSNs beside it,
    with parameter counts, and why this beats k separate networks even when it is larger than the teacher."""
    try:
        names = entry.canonical(tasks)
    except RequestError:
        return "<p>Tick a task to see the assembled network.</p>"
    counts = entry.parameter_counts(names)
    ckn, k = counts["ckn"], len(names)
    assembled = ckn + sum(counts[n] for n in names)
    separate = k * ckn + sum(counts[n] for n in names)
    teacher = entry.teacher_parameters()
    shown = names[:max_boxes]
    row, top = 26, 34
    height = max(top + row * (len(shown) + (1 if len(names) > len(shown) else 0)) + 10, 130)
    ckn_y = top + (row * len(shown)) / 2 - 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 520 {height:.0f}" width="100%" '
             f'style="max-width:520px;font-family:sans-serif;font-size:12px" role="img" '
             f'aria-label="CKN plus {k} TSNs">',
             '<text x="4" y="16" font-weight="bold">image</text>',
             f'<line x1="20" y1="24" x2="20" y2="{ckn_y + 30:.0f}" stroke="#6b7280"/>',
             f'<line x1="20" y1="{ckn_y + 30:.0f}" x2="60" y2="{ckn_y + 30:.0f}" stroke="#6b7280"/>',
             f'<rect x="60" y="{ckn_y:.0f}" width="150" height="60" rx="8" fill="#e0e7ff" stroke="#4f46e5"/>',
             f'<text x="135" y="{ckn_y + 24:.0f}" text-anchor="middle" font-weight="bold">CKN (runs once)</text>',
             f'<text x="135" y="{ckn_y + 44:.0f}" text-anchor="middle">S = {ckn:,}</text>']
    for i, name in enumerate(shown):
        y = top + i * row
        parts += [f'<line x1="210" y1="{ckn_y + 30:.0f}" x2="260" y2="{y + 10}" stroke="#9ca3af"/>',
                  f'<rect x="260" y="{y}" width="250" height="20" rx="5" fill="#fef3c7" stroke="#d97706"/>',
                  f'<text x="268" y="{y + 14}">TSN {html.escape(name[:22])}: s = {counts[name]:,}</text>']
    if len(names) > len(shown):
        parts.append(f'<text x="268" y="{top + len(shown) * row + 14}">… and {len(names) - len(shown)} more '
                     'TSNs</text>')
    parts.append("</svg>")
    why = (f"<p><b>Assembled: {assembled:,} parameters</b>, one CKN pass per image. {k} separate factor "
           f"network{'s' if k > 1 else ''} would hold {separate:,} and run the CKN {k} time{'s' if k > 1 else ''}")
    if k > 1:
        why += f" ({separate / assembled:.1f}× the parameters)"
    why += "."
    if teacher is not None and assembled > teacher:
        why += (f" It is larger than the teacher ({teacher:,}), but the teacher serves only its fixed set of "
                f"{len(entry.tasks)} tasks: any other subset would need a new distilled student (2^n of them), "
                "while here any subset is assembled from the same factors, with no training.")
    elif teacher is not None:
        why += f" The teacher has {teacher:,}."
    return "\n".join(parts) + why + "</p>"


METRIC_LABELS = {  # manifest keys -> words (Explain tab); (label, kind): kind "pct" = a share shown in %
    "accuracy": ("factor (CKN + TSN)", "pct"), "teacher_accuracy": ("teacher", "pct"),
    "kd_accuracy": ("KD baseline", "pct"),
    "mean_factor_accuracy": ("mean factor accuracy", "pct"), "mean_teacher_accuracy": ("mean teacher accuracy", "pct"),
    "mean_kd_accuracy": ("mean KD-baseline accuracy", "pct"),
    "teacher_kway_accuracy": ("teacher, 10-way accuracy", "pct"),
    "kd_kway_accuracy": ("KD baseline, 10-way accuracy", "pct"),
    "assembled_argmax_kway_accuracy": ("assembled factors, argmax of P(class), 10-way accuracy", "pct"),
    "assembly_max_abs_diff": ("assembled vs separate factors, largest logit difference", "num"),
    "leakage_tsn_off_diagonal_excess": ("leakage from TSN features (probe accuracy above chance, other tasks)", "pts"),
    "leakage_teacher_excess": ("leakage from the teacher's features (same probe)", "pts"),
    "dci_disentanglement_tsn": ("DCI disentanglement of the TSN features (0-1)", "num"),
    "dci_disentanglement_teacher": ("DCI disentanglement of the teacher's features (0-1)", "num"),
    "targets_passed": ("targets met", "text"), "samples": ("test images", "int"), "split": ("split", "text"),
}
_HIDDEN_SUMMARY = ("dataset", "details")


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, (key.replace("_", " "), ""))[0]


def format_metric(key: str, value: Any) -> str:
    """A metric for a person: shares as percentages, leakage in points, counts with separators."""
    kind = METRIC_LABELS.get(key, ("", ""))[1]
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind == "pct":
            return f"{100 * value:.2f} %"
        if kind == "pts":
            return f"{100 * value:.1f} pts"
        if kind == "int" or isinstance(value, int):
            return f"{int(value):,}"
        return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def metrics_markdown(tasks: Sequence[TaskSpec], metrics: dict[str, Any]) -> str | None:
    """Per-task accuracies of the given tasks and the bank's summary, in words and percentages."""
    per_task = metrics.get("tasks", {})
    if not per_task:
        return None
    columns = [key for key in METRIC_LABELS if any(key in v for v in per_task.values())]
    columns += sorted({k for v in per_task.values() for k in v} - set(columns))
    lines = ["| task | " + " | ".join(metric_label(c) for c in columns) + " |",
             "|---" + "|---:" * len(columns) + "|"]
    for task in tasks:
        values = per_task.get(task.name, {})
        lines.append(f"| {task.name} | " + " | ".join(format_metric(c, values.get(c)) for c in columns) + " |")
    summary = {k: v for k, v in metrics.get("summary", {}).items() if k not in _HIDDEN_SUMMARY}
    if summary:
        lines += ["", "| whole bank | |", "|---|---:|"]
        lines += [f"| {metric_label(k)} | {format_metric(k, v)} |" for k, v in summary.items()]
    return "\n".join(lines)


def explain_markdown(entry: BankEntry, tasks: Iterable[str] | None = None) -> dict[str, Any]:
    """The Explain tab for the ticked ``tasks`` (default: all): metrics, leakage heat map, parameter
    accounting, the other figures and the full report (a Hub bank's too, when its repo has ``evaluation/``)."""
    manifest = entry.manifest
    chosen = [t for t in (entry.task_names if tasks is None else tasks) if t in entry.task_names]
    specs = [t for t in entry.tasks if t.name in chosen]
    parts = [f"### {entry.label}", ""]
    if manifest.teacher.get("description"):
        parts += [f"Teacher: {manifest.teacher['description']}", ""]
    parts += [f"**Recognises:** {entry.input_description}.", ""]
    if len(specs) < len(entry.tasks):
        parts += [f"Showing the {len(specs)} ticked of {len(entry.tasks)} tasks (test split).", ""]
    parts.append(metrics_markdown(specs, manifest.metrics or {})
                 or "No evaluation is recorded in this bank's manifest yet.")
    metrics_md = "\n".join(parts)

    results = entry.evaluation_results
    params = (results or {}).get("parameters")
    lines = []
    if chosen:
        counts = entry.parameter_counts(chosen)
        k, s_total = len(chosen), sum(counts[t] for t in chosen)
        lines += [f"The {k} ticked task{'s' if k > 1 else ''}:", "", "| what | parameters |", "|---|---:|",
                  f"| assembled: CKN S + {k} TSN{'s' if k > 1 else ''} | {counts['ckn'] + s_total:,} |",
                  f"| {k} separate factor network{'s' if k > 1 else ''}, k·S + Σs | {k * counts['ckn'] + s_total:,} |",
                  f"| one distilled student per subset of them, 2^k·S | {2 ** k * counts['ckn']:,} |",
                  f"| teacher (all {len(entry.tasks)} tasks) | {format_count(entry.teacher_parameters())} |", ""]
    else:
        lines += ["Tick tasks to see their parameter accounting.", ""]
    if params:
        n = params["num_tasks"]
        lines += [
            f"The whole bank: n = {n} tasks, S = CKN = {params['ckn_params']:,} parameters, mean s = TSN = "
            f"{sum(params['tsn_params']) / n:,.0f}.", "",
            "| what | parameters |", "|---|---:|",
            f"| factor bank, n·s + S (any subset of tasks) | {params['bank_params']:,} |",
            f"| one student per subset of tasks, 2^n·S (the paper's count) | "
            f"{params['subset_students_params_paper']:,} |",
            f"| teacher | {format_count(params.get('teacher_params'))} |",
            f"| KD student | {format_count(params.get('kd_student_params'))} |",
        ]
    params_md = "\n".join(lines).strip()

    folder = entry.evaluation_dir
    leakage = folder / "leakage.png" if folder is not None and (folder / "leakage.png").is_file() else None
    figures = sorted(p for p in folder.glob("*.png") if p.name != "leakage.png") if folder is not None else []
    report = None
    if folder is not None and (folder / "results.md").is_file():
        report = (folder / "results.md").read_text()
    if leakage is None:
        note = "No leakage heat map: this bank has no evaluation/leakage.png."
    else:
        note = ("Leakage: a linear probe decodes task *j* (columns) from TSN *i*'s features (rows). A factorized "
                "bank keeps the off-diagonal close to chance; the teacher's features leak everything.")
    return {"metrics": metrics_md, "parameters": params_md, "leakage": leakage, "leakage_note": note,
            "figures": figures, "report": report}


# ============================================================================ examples

@dataclass(frozen=True)
class Example:
    path: Path
    dataset: str
    labels: dict[str, str]  # true label per task
    caption: str
    inverted: bool = False


def load_examples(folder: str | os.PathLike = EXAMPLES_DIR) -> list[Example]:
    """The examples listed in ``<folder>/examples.json`` whose files exist (none if it is absent)."""
    folder = Path(folder)
    try:
        data = json.loads((folder / EXAMPLES_FILE).read_text())
    except (OSError, ValueError):
        return []
    examples = []
    for item in data.get("examples", []):
        path = folder / item["file"]
        if path.is_file():
            examples.append(Example(path, item["dataset"], dict(item["labels"]), item.get("caption", path.stem),
                                    bool(item.get("inverted", False))))
    return examples


def _caption(dataset: str, tasks: Sequence[TaskSpec], targets: Sequence[int]) -> str:
    """A short caption for a thumbnail (all true labels are in the example's record)."""
    if dataset == "fashion-mnist":
        return next((t.labels[1] for t, y in zip(tasks, targets) if int(y) == 1), "?")
    labels = {t.name: t.labels[int(y)] for t, y in zip(tasks, targets)}
    return labels.get("shape", "?")


def generate_examples(out_dir: str | os.PathLike = EXAMPLES_DIR, *, seed: int = 0, per_dataset: int | None = None,
                      fashion_root: str | os.PathLike | None = None) -> Path:
    """Render example PNGs from each dataset's TEST split + ``examples.json`` with their true labels.

    dSprites: 2 sprites of each shape; Fashion-MNIST: one image of each class. Each dataset also gets one
    "dark on white" variant (inverted, upscaled) to show the automatic inversion. Pixel-exact: a 64x64 or
    28x28 grey PNG read back gives exactly the dataset's tensor.
    """
    from kf_model.data import load_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    generator = torch.Generator().manual_seed(seed)
    records: list[dict[str, Any]] = []
    for name in ("dsprites", "fashion-mnist"):
        try:
            dataset = load_dataset(name, "test", root=fashion_root if name == "fashion-mnist" else None)
        except KFError as error:
            log.warning("no examples for %s: %s", name, error)
            continue
        targets = dataset.targets
        order = torch.randperm(len(dataset), generator=generator)
        if name == "dsprites":  # 2 of each shape
            groups = [order[targets[order, 0] == shape][:2] for shape in range(3)]
        else:  # one of each class
            groups = [order[targets[order, c] == 1][:1] for c in range(targets.shape[1])]
        picks = [int(i) for pair in zip(*groups) for i in pair] if name == "dsprites" else [
            int(g[0]) for g in groups if len(g)]
        if per_dataset is not None:
            picks = picks[:per_dataset]
        for position, index in enumerate(picks):
            image, target = dataset[index]
            array = np.round(image[0].numpy() * 255.0).astype(np.uint8)
            labels = {t.name: t.labels[int(y)] for t, y in zip(dataset.tasks, target.tolist())}
            caption = _caption(name, dataset.tasks, target.tolist())
            variants = [(False, Image.fromarray(array, mode="L"))]
            if position == len(picks) - 1:  # the last one also as a dark-on-white picture, 4x larger
                big = Image.fromarray(255 - array, mode="L")
                variants.append((True, big.resize((big.width * 4, big.height * 4), Image.Resampling.BICUBIC)))
            for inverted, picture in variants:
                file = f"{name}-test-{index:06d}{'-on-white' if inverted else ''}.png"
                picture.save(out / file, optimize=True)
                records.append({"file": file, "dataset": name, "split": "test", "index": index, "inverted": inverted,
                                "labels": labels,
                                "caption": caption + (" on white" if inverted else "")})
    (out / EXAMPLES_FILE).write_text(json.dumps({
        "format_version": 1, "generated_by": "python -m kf_model.serving examples",
        "note": "held-out (test split) images with their true labels; '-on-white' files are inverted and upscaled",
        "examples": records}, indent=2, ensure_ascii=False) + "\n")
    return out


# ============================================================================ command line

def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kf_model.serving", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("examples", help="render assets/examples/ from the datasets' test splits")
    ex.add_argument("--out", default=str(EXAMPLES_DIR))
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--fashion-root", default=None, help="folder of the Fashion-MNIST idx files")
    pr = sub.add_parser("predict", help="predict one image file with a bank")
    pr.add_argument("image")
    pr.add_argument("--bank", default=None)
    pr.add_argument("--tasks", default=None, help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "examples":
        out = generate_examples(args.out, seed=args.seed, fashion_root=args.fashion_root)
        print(f"wrote {len(list(out.glob('*.png')))} examples to {out}")
    else:
        registry = BankRegistry.from_env(warmup=False)
        entry = registry.get(args.bank)
        prediction = registry.predict(args.image, entry.key, args.tasks or entry.task_names)
        print(json.dumps(prediction.to_json(4), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    _main()


__all__ = [
    "MAX_FILE_BYTES", "MAX_IMAGE_PIXELS", "BankEntry", "BankRegistry", "Example", "Prediction", "PredictionGate",
    "RequestError", "ScratchDir", "assembly_svg", "explain_markdown", "fetch_manifest", "generate_examples",
    "is_blank", "is_light_background", "load_examples", "open_image", "parse_bank_key", "parse_hub_reference",
    "pick_device", "plain_message", "prepare_image",
    "summary_markdown", "tensor_to_preview",
]
