"""The banks the app serves: bundled ones loaded at start, Hub ones fetched lazily (the manifest first, then
only the CKN and the TSNs asked for), assembled networks cached per (bank, task set).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from kf_model.bank import (
    CONFIG_FILE,
    EVALUATION_DIR,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    FactorBank,
    Manifest,
    fetch_manifest,
)
from kf_model.bank.hub import evaluation_files
from kf_model.data.specs import TaskSpec
from kf_model.devices import describe_device, pick_device
from kf_model.errors import (
    BankLoadingError,
    BankNotFoundError,
    HubUnavailableError,
    KFError,
    RequestError,
    UnknownTaskError,
    name_list,
    quoted,
)
from kf_model.export.quantize import check_quantize
from kf_model.limits import read_json
from kf_model.models.factor import AssembledNetwork
from kf_model.models.folded import fold_for_inference
from kf_model.serving.export import write_bank_onnx, write_bank_zip
from kf_model.serving.familiarity import FamiliarityModel, describe_input
from kf_model.serving.images import is_blank, open_image, prepare_image, should_invert
from kf_model.serving.input_signals import image_signals
from kf_model.serving.memory import (
    MAX_HUB_BANKS,
    MAX_HUB_BYTES,
    BoundedCache,
    banks_to_drop,
    manifest_memory,
    network_cache,
)
from kf_model.serving.predict import Prediction, api_result, forward_pass, no_tasks, require_image, spaces
from kf_model.serving.runtime import ServingRuntime
from kf_model.utils import ASSETS_DIR, count_parameters, module_bytes

log = logging.getLogger(__name__)

FACTORS_DIR = ASSETS_DIR / "factors"
# Which bundled bank is the default (the one the page opens with, and the API's when no bank is given), then the order
# of the bank list: the first name here that the app has (banks not named follow, alphabetically). $KF_REPO, when set,
# is the default instead. The photo bank leads: any visitor's photograph can use it.
BANK_ORDER: tuple[str, ...] = ("photo-everyday", "dsprites", "fashion-mnist")
MAX_BANK_KEY = 256  # "owner/name@revision": Hub repo ids have at most 96 characters, revisions are short

# auto now exports only the tick sets visitors ask for most (runtime.EXPORT_AFTER requests), but an export keeps
# torch's ONNX exporter and onnxruntime in the serving process: with the prediction worker, the bench's memory row
# (1.5 GB for the app's processes) had no room for it. Opt-in until exports run in a short-lived process.
DEFAULT_APP_RUNTIME = "torch"


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
    networks: BoundedCache = field(default_factory=network_cache)  # (tasks) -> AssembledNetwork, bytes-bounded
    manifest_bytes: int = 0  # size of factors.json (a parsed manifest weighs a multiple of it)
    lock: threading.RLock = field(default_factory=threading.RLock)  # the caches; never held while loading
    load_lock: threading.Lock = field(default_factory=threading.Lock)  # one load of this bank at a time
    _evaluation_lock: threading.Lock = field(default_factory=threading.Lock)
    _evaluation_fetched: bool = False
    familiarity_problem: str | None = None  # why the bank's familiarity statistics were dropped, if they were
    _familiarity: FamiliarityModel | None = None
    _familiarity_read: bool = False
    _folded_ckn: tuple[torch.nn.Module, torch.nn.Module] | None = None  # (the bank's CKN, its inference copy)
    _bank_bytes: int = 0

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

    @property
    def familiarity(self) -> FamiliarityModel | None:
        """The bank's familiarity statistics (``familiarity/``), read when the bank loads (a Hub bank's files
        come down with its factors, at the manifest's commit): a prediction never downloads. None for a bank
        without them (the app then says it cannot tell)."""
        return self._familiarity

    def _read_familiarity(self, bank: FactorBank) -> None:
        """Read ``familiarity/`` once, from the folder the bank's files are in (called under ``load_lock``),
        checked against the bank's CKN (kf_model.serving.familiarity)."""
        if self._familiarity_read or not self.manifest.familiarity or bank.folder is None:
            return
        self._familiarity_read = True
        try:
            feature_dim = sum(bank.ckn.feature_widths)
            self._familiarity = FamiliarityModel.load(bank.folder, self.manifest.ckn_fingerprint,
                                                      feature_dim=feature_dim)
        except KFError as error:
            log.warning("%s: familiarity statistics not loaded: %s", self.key, error)
            self.familiarity_problem = f"familiarity statistics not used: {error}"

    @property
    def runtime_id(self) -> tuple[str, str | None]:
        """What names this bank's exported networks: its key (a Hub key holds the revision) and pinned commit."""
        return self.key, self.commit

    @property
    def loading(self) -> bool:
        """Whether a load of this bank is under way (its files downloading)."""
        return self.load_lock.locked()

    @property
    def memory_bytes(self) -> int:
        """What this bank holds in memory: its parsed manifest (estimated), loaded factors, cached networks."""
        return manifest_memory(self.manifest_bytes) + self._bank_bytes + self.networks.bytes

    def fetch_evaluation(self) -> Path | None:
        """A Hub bank's ``evaluation/`` folder (tables and figures; downloaded once, at the pinned commit)."""
        if self.kind != "hub" or self._evaluation_fetched:
            return self.evaluation_dir
        with self._evaluation_lock:  # two panels asking at once download it once
            if not self._evaluation_fetched:
                try:
                    _refuse_local_path(self.repo_id)
                    self._fetch(evaluation_files(self.repo_id, self.commit, self.token))
                except KFError as error:
                    log.warning("%s: evaluation not downloaded: %s", self.key, error)
                self.__dict__.pop("evaluation_results", None)
                self._evaluation_fetched = True
        return self.evaluation_dir

    def _fetch(self, names: list[str]) -> None:
        """Download these files (exact names) of a Hub bank into its snapshot folder (same commit)."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError

        from kf_model.bank import TRANSPORT_ERRORS

        if not names:
            return
        try:
            snapshot_download(self.repo_id, revision=self.commit, allow_patterns=names, token=self.token)
        except (HfHubHTTPError, *TRANSPORT_ERRORS) as error:
            raise HubUnavailableError(f"cannot download {name_list(names)} of {self.key}") from error

    # ------------------------------------------------------------------ loading
    def canonical(self, tasks: Iterable[str] | str | None) -> list[str]:
        """The requested tasks, checked and in the bank's order; refuses an empty or unknown selection."""
        if tasks is None:
            tasks = []
        if isinstance(tasks, str):
            tasks = tasks.split(",")
        tasks = list(tasks) if isinstance(tasks, Iterable) and not isinstance(tasks, bytes) else tasks
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise RequestError(f"tasks must be a list of task names (strings), got {str(tasks)[:80]!r}; this bank's "
                               f"tasks are: {name_list(self.task_names)}")
        wanted = [t.strip() for t in tasks if t.strip()]
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
        """The bank with at least these tasks loaded on the device (downloads only what is missing: the CKN, the
        TSNs and, once, ``familiarity/``).

        One load of a bank at a time (``load_lock``); a request needing a load while another runs is answered at
        once (:class:`~kf_model.errors.BankLoadingError`) instead of waiting. Predictions of tasks already loaded
        never wait for a load.
        """
        bank = self.bank
        if bank is not None and set(tasks) <= set(bank.tsns):
            return bank
        if not self.load_lock.acquire(blocking=False):
            raise still_loading(self.key)
        try:
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
            self._read_familiarity(bank)  # before the bank is visible: its predictions have it
            weight = module_bytes(bank.ckn) + sum(module_bytes(tsn) for tsn in bank.tsns.values())
            with self.lock:
                self.bank, self._bank_bytes = bank, weight
                self.networks.clear()
            return bank
        finally:
            self.load_lock.release()

    def network(self, tasks: Sequence[str]) -> AssembledNetwork:
        """The assembled network of these (canonical) tasks, cached; built on the bank's device."""
        key = tuple(tasks)
        network = self.networks.get(key)
        if network is not None:
            return network
        bank = self.ensure(tasks)  # no lock held: may load
        network = bank.assemble(tasks, folded_ckn=self.folded_ckn(bank)).to(self.device).eval()
        return self.networks.setdefault(key, network)

    def folded_ckn(self, bank: FactorBank) -> torch.nn.Module:
        """The bank's CKN folded for inference once, shared by every network assembled from it: a timm trunk
        takes ~0.3 s to fold, and the network cache holds only a few of a photograph bank's networks."""
        made = self._folded_ckn
        if made is None or made[0] is not bank.ckn:  # a load replaced the bank (and its CKN)
            made = self._folded_ckn = (bank.ckn, fold_for_inference(bank.ckn).to(self.device).eval())
        return made[1]

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
            results = read_json(folder / "results.json", f"{self.key}: evaluation/results.json")
        except KFError as error:  # too big, not JSON, nested too deep
            log.warning("%s", error)
            return None
        return results if isinstance(results, dict) else None


def still_loading(key: str) -> BankLoadingError:
    """The answer to a request on a bank whose files are still downloading."""
    return BankLoadingError(f"bank {quoted(key)} is still loading (its files are downloading); try again in a "
                            "moment (banks already loaded keep answering)")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _familiarity(entry: BankEntry, features: torch.Tensor, prepared: Image.Image, inverted: bool
                 ) -> dict[str, Any] | None:
    """The familiarity verdict of one image: the pre-network signals (when the bank uses them) and the
    feature distance; None when the bank has no (usable) statistics. An image of one flat colour has nothing in it
    to recognise, whatever the statistics say (dSprites' passed a black square as familiar: its images are mostly
    black)."""
    if is_blank(prepared):
        return {"familiarity": 0.0, "distance": None, "unfamiliar": True,
                "reason": "unlike the bank's images before the network looks: one flat colour, nothing to recognise"}
    model = entry.familiarity
    if model is None:
        return None
    signals = [image_signals(prepared, inverted)] if model.signal_limits is not None else None
    return model.score(features, signals)[0]


def _refuse_local_path(repo_id: str | None) -> None:
    """A Hub id that is also a local folder would be loaded from disk by FactorBank.from_pretrained: refuse."""
    if repo_id is None or Path(repo_id).exists() or repo_id.startswith((".", "/", "~")):
        raise BankNotFoundError(f"{repo_id!r} is not a Hub repo id this app loads (it names a local path)")


def parse_bank_key(key: str) -> tuple[str, str | None]:
    """"org/repo@revision" -> ("org/repo", "revision"); "org/repo" -> ("org/repo", None)."""
    repo, _, revision = key.strip().partition("@")
    return repo.strip(), (revision.strip() or None)


_HUB_URL = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<path>[^?#]*?)/?(?:[?#].*)?$")


def in_bank_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order a visitor sees them: those of :data:`BANK_ORDER` first, then alphabetically."""
    names = list(names)
    named = [name for name in BANK_ORDER if name in names]
    return named + sorted(name for name in names if name not in named)


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


class BankRegistry:
    """The banks the app serves: bundled ones (loaded at start) and Hub ones (loaded on demand, cached).

    Thread-safe: Gradio calls it from several worker threads at once. ``runtime``: what runs the networks
    (:mod:`kf_model.serving.runtime`: "torch", "onnxruntime" or "auto"; the app's default, from $KF_RUNTIME, is
    "auto").
    """

    def __init__(self, factors_dir: str | os.PathLike | None = FACTORS_DIR, *, device: str | torch.device | None = None,
                 allow_hub: bool = True, default_repo: str | None = None, default_revision: str | None = None,
                 warmup: bool = True, max_hub_banks: int = MAX_HUB_BANKS, max_hub_bytes: int = MAX_HUB_BYTES,
                 runtime: str = "torch") -> None:
        self.device = pick_device(None if device is None else str(device))
        self.runtime = ServingRuntime(runtime, self.device)
        self.max_hub_banks, self.max_hub_bytes = max_hub_banks, max_hub_bytes
        self.allow_hub = allow_hub
        self.factors_dir = None if factors_dir is None else Path(factors_dir)
        self.bundled: dict[str, BankEntry] = {}
        self.problems: list[str] = []  # bundled banks that failed to load, for the UI to show
        self._hub: OrderedDict[str, BankEntry] = OrderedDict()
        self._fetching: set[str] = set()  # Hub banks whose manifest is downloading
        self._lock = threading.RLock()
        self._trusted: set[str] = set()
        if self.factors_dir is not None and self.factors_dir.is_dir():
            for folder in sorted(p for p in self.factors_dir.iterdir() if (p / MANIFEST_FILE).is_file()):
                try:
                    self.bundled[folder.name] = self._load_bundled(folder, warmup)
                except KFError as error:
                    log.warning("bundled bank %s not loaded: %s", folder, error)
                    self.problems.append(f"bundled bank {folder.name!r} not loaded: {error}")
        self.bundled = {key: self.bundled[key] for key in in_bank_order(self.bundled)}
        self.default: str | None = next(iter(self.bundled), None)  # the API's bank when none is given
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
        """$KF_FACTORS_DIR (bundled banks), $KF_REPO/$KF_REVISION (default bank), $KF_ALLOW_HUB=0 (no Hub),
        $KF_RUNTIME (auto, torch or onnxruntime; default torch) unless ``runtime=`` is given."""
        directory = factors_dir or os.environ.get("KF_FACTORS_DIR") or FACTORS_DIR
        kwargs["runtime"] = kwargs.get("runtime") or os.environ.get("KF_RUNTIME") or DEFAULT_APP_RUNTIME
        return cls(directory, default_repo=os.environ.get("KF_REPO") or None,
                   default_revision=os.environ.get("KF_REVISION") or None,
                   allow_hub=os.environ.get("KF_ALLOW_HUB", "1").lower() not in ("0", "false", "no"), **kwargs)

    def _load_bundled(self, folder: Path, warmup: bool) -> BankEntry:
        bank = FactorBank.from_pretrained(folder, device=self.device)
        entry = BankEntry(key=folder.name, kind="bundled", manifest=bank.manifest, folder=folder, device=self.device,
                          bank=bank)
        entry._read_familiarity(bank)
        if warmup and spaces is None:  # on ZeroGPU the GPU exists only inside a request
            network = entry.network(entry.task_names)
            spec = bank.input_spec
            forward_pass(network, torch.zeros(1, spec.channels, spec.size, spec.size, device=self.device))
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
        _refuse_local_path(repo_id)
        with self._lock:  # one manifest download per bank; a second request meanwhile is told it is loading
            if canonical in self._fetching:
                raise still_loading(canonical)
            self._fetching.add(canonical)
        try:
            hub = fetch_manifest(repo_id, revision, token=token)  # only factors.json
            entry = BankEntry(key=canonical, kind="hub", manifest=hub.manifest, folder=hub.folder,
                              device=self.device, repo_id=repo_id, revision=revision, commit=hub.commit, token=token,
                              manifest_bytes=_file_size(hub.folder / MANIFEST_FILE))
            with self._lock:  # visible before the fetch is over: no second request fetches it again
                self._hub[canonical] = entry
        finally:
            with self._lock:
                self._fetching.discard(canonical)
        self.trim()
        return entry

    def loading(self, key: str | None) -> bool:
        """Whether the bank ``key`` names is being fetched or loaded right now (no I/O; False for unknown names)."""
        try:
            _, canonical = self._canonical_key(key)
        except KFError:
            return False
        with self._lock:
            entry = self.bundled.get(canonical) or self._hub.get(canonical)
            return canonical in self._fetching or (entry is not None and entry.loading)

    def trim(self) -> None:
        """Drop the least recently used Hub banks until they fit ``max_hub_banks`` and ``max_hub_bytes``
        (each revision counts as a bank; bundled banks are never dropped)."""
        with self._lock:
            weights = OrderedDict((key, entry.memory_bytes) for key, entry in self._hub.items())
            for key in banks_to_drop(weights, self.max_hub_banks, self.max_hub_bytes):
                log.info("Hub bank %s dropped from memory (%d MB)", key, weights[key] // 2**20)
                del self._hub[key]

    @property
    def hub_bytes(self) -> int:
        """What the Hub banks in memory hold, in bytes (see :attr:`BankEntry.memory_bytes`)."""
        with self._lock:
            return sum(entry.memory_bytes for entry in self._hub.values())

    def load(self, bank: str | None, tasks: Iterable[str] | str | None) -> BankEntry:
        """Fetch what predicting ``tasks`` of ``bank`` needs (the manifest, the CKN, these TSNs and the bank's
        familiarity statistics) -> the bank."""
        entry = self.get(bank)
        entry.ensure(entry.canonical(tasks))
        if entry.kind == "hub":
            self.trim()
        return entry

    # ------------------------------------------------------------------ prediction
    def predict(self, image: str | os.PathLike | Image.Image | None, bank: str | BankEntry | None,
                tasks: Iterable[str] | str | None, *, invert: bool | None = None) -> Prediction:
        """Run the assembled network of ``tasks`` of ``bank`` on one image (a file path or a PIL image)."""
        start = time.perf_counter()
        require_image(image)
        entry = bank if isinstance(bank, BankEntry) else self.get(bank)
        names = entry.canonical(tasks)
        if isinstance(image, Image.Image):
            source, notes = image, []
        else:
            source, notes = open_image(image)
        prepared, more = prepare_image(source)
        notes += more
        spec = entry.manifest.input_spec
        inverted = should_invert(prepared, spec, invert)
        if inverted and invert is None:
            notes.append("light background: inverted to light-on-dark, like the training data")
        network = entry.network(names)  # loads (downloads) the factors if needed: not counted as latency
        if entry.kind == "hub":
            self.trim()  # a new network may have grown the bank
        t0 = time.perf_counter()
        x = entry.ensure(names).preprocess(prepared, invert=inverted)
        t1 = time.perf_counter()
        probabilities, features, runtime = self.runtime.forward(entry.runtime_id, entry.ensure(names), names,
                                                                network, x)
        t2 = time.perf_counter()
        familiarity = _familiarity(entry, features, prepared, inverted)
        labels = {task.name: task.labels for task in entry.tasks}
        result = {name: dict(zip(labels[name], probabilities[name].tolist(), strict=True)) for name in names}
        return Prediction(bank=entry.key, tasks=names, probabilities=result, processed=x[0].detach().cpu(),
                          inverted=inverted, notes=notes, one_vs_rest=entry.one_vs_rest,
                          timings={"preprocess_ms": 1000 * (t1 - t0), "network_ms": 1000 * (t2 - t1),
                                   "total_ms": 1000 * (time.perf_counter() - start)},
                          device=describe_device(x.device), familiarity=familiarity,
                          expects=entry.input_description, runtime=runtime,
                          untested={n: r for n, r in entry.manifest.untested_tasks.items() if n in names})

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
        return write_bank_zip(entry.ensure(names).subset(names), f"kf-{entry.dataset or entry.key}", names, out_dir)

    def export_onnx(self, bank: str | None, tasks: Iterable[str] | str | None,
                    out_dir: str | os.PathLike, *, quantize: str | None = None) -> Path:
        """The assembled network of these tasks as one ONNX file in ``out_dir`` (input ``image``, one output of
        logits per task, dynamic batch; the input spec and class names in its metadata); ``quantize="int8"``:
        static int8, calibrated on held-out training images of the bank's dataset."""
        check_quantize(quantize, torch.zeros(1, 1, 1, 1))  # a bad value is refused before anything loads
        entry = self.get(bank)
        names = entry.canonical(tasks)
        return write_bank_onnx(entry.ensure(names), f"kf-{entry.dataset or entry.key}", names, out_dir,
                               quantize=quantize)
