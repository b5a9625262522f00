"""FactorBank: the unit that is saved, pushed and pulled.

A bank is a folder (or a Hub repo) holding one CKN and any number of TSNs from the
same factorization::

    factors.json                  manifest: format, tasks, input spec, CKN fingerprint, summaries, metrics
    README.md                     model card
    ckn/config.json, ckn/model.safetensors
    tsn/<task>/config.json, tsn/<task>/model.safetensors
    evaluation/                   optional evaluation outputs (tables, plots)

Pulling ``tasks=[...]`` fetches only the manifest, the CKN and those TSNs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_model
from torch import nn

from kf_model.card import render_model_card
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import (
    BankNotFoundError,
    CorruptWeightsError,
    EmptySelectionError,
    HubUnavailableError,
    IncompatibleFactorsError,
    InvalidConfigError,
    KFError,
    TaskExistsError,
    UnknownTaskError,
    UnsafeWeightsError,
    name_list,
)
from kf_model.limits import MAX_TASKS, MAX_TEXT, check_parameter_count
from kf_model.models import CommonKnowledgeNetwork, TaskSpecificNetwork, count_parameters
from kf_model.models.factor import AssembledNetwork, FactorNetwork
from kf_model.preprocess import image_to_tensor

FORMAT_VERSION = 1
MANIFEST_FILE = "factors.json"
CARD_FILE = "README.md"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
EVALUATION_DIR = "evaluation"  # optional: evaluation outputs (results.json, results.md, figures)
FAMILIARITY_DIR = "familiarity"  # optional: statistics of the CKN's features on the training data

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx: connection errors come from either
    from httpx2 import TransportError
except ImportError:  # pragma: no cover
    from httpx import TransportError
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (TransportError, ConnectionError, TimeoutError)


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes, values): identifies one trained CKN."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Manifest:
    """Content of ``factors.json``. ``tasks`` lists every task of the bank, loaded or not."""

    tasks: list[TaskSpec]
    input_spec: InputSpec
    ckn_fingerprint: str
    dataset: str | None = None
    teacher: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    input_description: str | None = None  # what a good input looks like, in words (optional)
    familiarity: dict[str, Any] = field(default_factory=dict)  # summary of familiarity/ (kf_model.familiarity)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format_version": self.format_version, "dataset": self.dataset,
            "tasks": [t.to_dict() for t in self.tasks], "input_spec": self.input_spec.to_dict(),
            "ckn_fingerprint": self.ckn_fingerprint, "teacher": self.teacher, "training": self.training,
            "metrics": self.metrics,
        }
        if self.input_description:  # optional keys: absent from older manifests, written only when set
            data["input_description"] = self.input_description
        if self.familiarity:
            data["familiarity"] = self.familiarity
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "factors.json") -> Manifest:
        """Every field is checked before it is used: task names become folders, sizes become tensors."""
        if not isinstance(data, dict):
            raise CorruptWeightsError(f"{source} is not a valid factor-bank manifest: it holds a JSON "
                                      f"{type(data).__name__}, not an object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IncompatibleFactorsError(
                f"{source}: factor bank format {repr(version)[:20]} is not supported by this kf "
                f"(it reads {FORMAT_VERSION})"
            )
        missing = [key for key in ("tasks", "input_spec", "ckn_fingerprint") if key not in data]
        if missing:
            raise CorruptWeightsError(f"{source} is not a valid factor-bank manifest: it lacks {name_list(missing)}")
        tasks = data["tasks"]
        if not isinstance(tasks, list) or not 1 <= len(tasks) <= MAX_TASKS:
            raise CorruptWeightsError(f"{source}: 'tasks' must be a list of 1 to {MAX_TASKS:,} tasks")
        fingerprint = data["ckn_fingerprint"]
        if not isinstance(fingerprint, str) or not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
            raise CorruptWeightsError(f"{source}: 'ckn_fingerprint' must be a sha256 hex digest")
        dataset = data.get("dataset")
        if dataset is not None and (not isinstance(dataset, str) or len(dataset) > MAX_TEXT):
            raise CorruptWeightsError(f"{source}: 'dataset' must be a short string")
        summaries = {key: data.get(key, {}) for key in ("teacher", "training", "metrics")}
        for key, value in summaries.items():
            if not isinstance(value, dict):
                raise CorruptWeightsError(f"{source}: {key!r} must be a JSON object, got {type(value).__name__}")
        try:
            specs = [TaskSpec.from_dict(t) for t in tasks]
            input_spec = InputSpec.from_dict(data["input_spec"])
        except InvalidConfigError as error:
            raise type(error)(f"{source}: {error}") from None
        check_unique_tasks([t.name for t in specs], source)
        familiarity = data.get("familiarity")
        return cls(tasks=specs, input_spec=input_spec, ckn_fingerprint=fingerprint, dataset=dataset, **summaries,
                   input_description=_optional_text(data.get("input_description")),
                   familiarity=familiarity if isinstance(familiarity, dict) else {})

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CorruptWeightsError(f"cannot read the manifest {path}: {error}") from error
        return cls.from_dict(data, source=str(path))


def check_unique_tasks(names: Sequence[str], source: str) -> None:
    """A task may appear once; names are compared case-insensitively, as folders are on macOS and Windows."""
    seen: set[str] = set()
    twice = [n for n in names if n.lower() in seen or seen.add(n.lower())]
    if twice:
        raise CorruptWeightsError(f"{source} lists task(s) {name_list(twice)} more than once")


def bank_path(folder: Path, *parts: str) -> Path:
    """``folder/parts...``, refused unless it stays inside ``folder`` (names are data from a manifest).

    Checked on the path as written (not resolved): a Hub snapshot's files are symlinks into the cache's blob
    store by design, while a ``..`` or an absolute part never belongs in a bank path.
    """
    path = folder.joinpath(*parts)
    inside = os.path.normpath(path)
    root = os.path.normpath(folder)
    if any(Path(p).is_absolute() for p in parts) or os.path.commonpath([root, inside]) != root:
        raise InvalidConfigError(f"refusing the path {'/'.join(parts)!r}: it leads outside the bank folder {folder}")
    return path


def _optional_text(value: Any, limit: int = 500) -> str | None:
    """A short free-text manifest field: a string, cut at ``limit`` characters; anything else is ignored."""
    return value.strip()[:limit] or None if isinstance(value, str) else None


def save_module(module: nn.Module, folder: Path) -> None:
    """config.json (the module's __init__ arguments) + model.safetensors, and nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    module._save_pretrained(folder)
    (folder / CONFIG_FILE).write_text(json.dumps(module.init_config, indent=2, sort_keys=True))


def load_module(cls: type[nn.Module], folder: Path, label: str) -> nn.Module:
    """Strictly load a CKN/TSN folder; refuse pickles, name the file that is broken."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            raise UnsafeWeightsError(
                f"{label}: only pickled weights ({', '.join(pickles)}) and no {WEIGHTS_FILE}; "
                "kf loads safetensors only and never unpickles files"
            )
        raise CorruptWeightsError(f"{label}: {weights} is missing (kf loads {WEIGHTS_FILE} files only)")
    config = folder / CONFIG_FILE
    try:
        kwargs = json.loads(config.read_text())  # the __init__ arguments, as PyTorchModelHubMixin stores them
        if not isinstance(kwargs, dict):
            raise CorruptWeightsError(f"{label}: {config} holds a JSON {type(kwargs).__name__}, not an object")
        with torch.device("meta"):  # no memory yet: configs are bounded (kf_model.limits), then counted
            skeleton = cls(**kwargs)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptWeightsError(f"{label}: cannot read {config}: {error}") from error
    except InvalidConfigError as error:
        raise type(error)(f"{label}: {config}: {error}") from None
    except KFError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise CorruptWeightsError(f"{label}: {config} does not describe a {cls.__name__}: "
                                  f"{str(error)[:200]}") from error
    try:
        check_parameter_count(skeleton, f"{label}: {config}")
    except InvalidConfigError as error:
        raise type(error)(str(error)) from None
    _check_shapes(skeleton, weights, label)
    model = cls(**kwargs)
    try:
        load_model(model, weights, strict=True)
    except Exception as error:  # safetensors' own error type, OSError, missing/unexpected keys, shape mismatches
        raise CorruptWeightsError(f"{label}: cannot load {weights}: {error}") from error
    return model.eval()


def _check_shapes(skeleton: nn.Module, weights: Path, label: str) -> None:
    """Compare the config's tensor shapes with the file's header before anything is allocated or read."""
    try:
        with safe_open(weights, framework="pt") as f:
            stored = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as error:  # not a safetensors file, truncated header...
        raise CorruptWeightsError(f"{label}: cannot read {weights}: {error}") from error
    expected = {key: list(tensor.shape) for key, tensor in skeleton.state_dict().items()}
    if stored.keys() != expected.keys():
        missing, unexpected = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
        raise CorruptWeightsError(f"{label}: {weights} does not match its config.json "
                                  f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for key, shape in expected.items():
        if stored[key] != shape:
            raise CorruptWeightsError(f"{label}: {weights} does not match its config.json: {key} is {stored[key]} "
                                      f"in the file, {shape} in the config")


class FactorBank:
    """One CKN + TSNs from the same factorization, with the manifest that describes them."""

    def __init__(self, manifest: Manifest, ckn: CommonKnowledgeNetwork,
                 tsns: dict[str, TaskSpecificNetwork], source: str | None = None) -> None:
        known = {t.name for t in manifest.tasks}
        for name, tsn in tsns.items():
            if name not in known:
                raise UnknownTaskError(f"TSN {name!r} is not a task of this bank's manifest ({name_list(known)})")
            if tsn.ckn_fingerprint != manifest.ckn_fingerprint:
                raise IncompatibleFactorsError(
                    f"TSN {name!r} was trained with CKN {tsn.ckn_fingerprint[:12] or '?'} but this bank's CKN is "
                    f"{manifest.ckn_fingerprint[:12]}: the factors come from different factorizations"
                )
            if tsn.ckn_width != ckn.width:
                raise IncompatibleFactorsError(f"TSN {name!r} expects CKN width {tsn.ckn_width}, not {ckn.width}")
        self.manifest = manifest
        self.ckn = ckn.eval()
        order = [t.name for t in manifest.tasks]
        self.tsns = {name: tsns[name].eval() for name in order if name in tsns}
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_modules(cls, ckn: CommonKnowledgeNetwork, tsns: Sequence[TaskSpecificNetwork], *,
                     input_spec: InputSpec, dataset: str | None = None, teacher: dict[str, Any] | None = None,
                     training: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> FactorBank:
        """A bank from freshly trained modules: fingerprints the CKN and stamps it on every TSN."""
        check_unique_tasks([tsn.task.name for tsn in tsns], "the TSNs given")
        ckn = ckn.to("cpu").eval()
        fingerprint = weights_fingerprint(ckn)
        stamped = []
        for tsn in tsns:
            if tsn.ckn_fingerprint and tsn.ckn_fingerprint != fingerprint:
                raise IncompatibleFactorsError(f"TSN {tsn.task.name!r} was trained with another CKN")
            config = dict(tsn.init_config, ckn_fingerprint=fingerprint)
            copy = TaskSpecificNetwork(**config)
            copy.load_state_dict(tsn.state_dict())
            stamped.append(copy.eval())
        manifest = Manifest(tasks=[t.task for t in stamped], input_spec=input_spec, ckn_fingerprint=fingerprint,
                            dataset=dataset, teacher=teacher or {}, training=training or {}, metrics=metrics or {})
        return cls(manifest, ckn, {t.task.name: t for t in stamped})

    @classmethod
    def from_pretrained(cls, repo_or_path: str | Path, tasks: Iterable[str] | str | None = None,
                        revision: str | None = None, *, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, token: str | bool | None = None,
                        device: str | torch.device = "cpu") -> FactorBank:
        """Load a bank from a local folder or a Hub repo id; ``tasks`` limits what is downloaded and loaded."""
        wanted = None if tasks is None else list(dict.fromkeys([tasks] if isinstance(tasks, str) else tasks))
        path = Path(repo_or_path)
        try:
            is_folder = path.is_dir()
        except OSError as error:  # e.g. a name longer than the file system allows
            raise BankNotFoundError(f"{str(repo_or_path)[:100]!r} is neither a folder nor a Hub repo id: "
                                    f"{error.strerror}") from None
        if is_folder:
            folder, source = path, str(path)
            manifest = Manifest.read(folder / MANIFEST_FILE) if (folder / MANIFEST_FILE).is_file() else None
            if manifest is None:
                raise BankNotFoundError(f"{folder} is not a factor bank: it has no {MANIFEST_FILE}")
            names = _select_tasks(manifest, wanted, source)
        else:
            repo_id = str(repo_or_path)
            try:
                validate_repo_id(repo_id)
            except HFValidationError as error:
                raise BankNotFoundError(f"{repo_id[:100]!r} is neither an existing folder nor a Hub repo id") \
                    from error
            source = repo_id if revision is None else f"{repo_id}@{revision}"
            folder, manifest, names = _download(repo_id, wanted, revision, cache_dir, local_files_only, token, source)
        ckn = load_module(CommonKnowledgeNetwork, bank_path(folder, "ckn"), f"{source}: ckn")
        tsns = {name: load_tsn(folder, manifest, name, source) for name in names}
        fingerprint = weights_fingerprint(ckn)
        if fingerprint != manifest.ckn_fingerprint:
            raise IncompatibleFactorsError(
                f"{source}: ckn/{WEIGHTS_FILE} has fingerprint {fingerprint[:12]} but {MANIFEST_FILE} records "
                f"{manifest.ckn_fingerprint[:12]}: the CKN was replaced after factorization"
            )
        return cls(manifest, ckn, tsns, source=source).to(device)

    # ------------------------------------------------------------------ use
    @property
    def tasks(self) -> list[TaskSpec]:
        """The loaded tasks, in the manifest's order."""
        return [self.tsns[name].task for name in self.tsns]

    @property
    def available_tasks(self) -> list[TaskSpec]:
        """Every task of the bank, including those not downloaded."""
        return list(self.manifest.tasks)

    @property
    def input_spec(self) -> InputSpec:
        return self.manifest.input_spec

    @property
    def device(self) -> torch.device:
        return next(self.ckn.parameters()).device

    def to(self, device: str | torch.device) -> FactorBank:
        self.ckn.to(device)
        for tsn in self.tsns.values():
            tsn.to(device)
        return self

    def _check_tasks(self, names: Iterable[str]) -> list[str]:
        names = list(dict.fromkeys([names] if isinstance(names, str) else names))
        unknown = [n for n in names if n not in self.tsns]
        if unknown:
            not_loaded = [t.name for t in self.manifest.tasks if t.name not in self.tsns]
            raise UnknownTaskError(
                f"unknown task(s) {name_list(unknown)}; this bank has loaded: {name_list(self.tsns, 12)}"
                + (f" (the bank also holds {name_list(not_loaded)}, not loaded)" if not_loaded else "")
            )
        if not names:
            raise EmptySelectionError(f"choose at least one task of {name_list(self.tsns)}")
        return names

    def assemble(self, tasks: Iterable[str] | str | None = None) -> AssembledNetwork:
        """A multi-task network for these tasks (default: all loaded), in eval mode, no training needed."""
        names = self._check_tasks(self.tsns if tasks is None else tasks)
        return AssembledNetwork(self.ckn, [self.tsns[n] for n in names], for_inference=True)

    def factor(self, task: str) -> FactorNetwork:
        (name,) = self._check_tasks([task])
        return FactorNetwork(self.ckn, self.tsns[name]).eval()

    def preprocess(self, image: Image.Image, *, invert: bool | None = False) -> torch.Tensor:
        """[1, C, H, W] on the bank's device, exactly as the training data looked."""
        return image_to_tensor(image, self.input_spec, invert=invert).to(self.device)

    def subset(self, tasks: Iterable[str] | str) -> FactorBank:
        """The same bank restricted to these tasks (shares modules; the manifest keeps all task specs)."""
        names = self._check_tasks(tasks)
        return FactorBank(self.manifest, self.ckn, {n: self.tsns[n] for n in names}, source=self.source)

    def export_onnx(self, tasks: Iterable[str] | str | None, path: str | Path) -> Path:
        """The assembled network of ``tasks`` (None: all loaded) as one ONNX file: input ``image``, one output
        per task (see :mod:`kf_model.export.onnx`)."""
        from kf_model.export.onnx import export_onnx

        return export_onnx(self.assemble(tasks), path, self.input_spec, ckn_fingerprint=self.manifest.ckn_fingerprint)

    def parameter_counts(self) -> dict[str, int]:
        return {"ckn": count_parameters(self.ckn), **{n: count_parameters(t) for n, t in self.tsns.items()}}

    # ------------------------------------------------------------------ save / push
    def save_pretrained(self, folder: str | Path, *, repo_id: str | None = None) -> Path:
        """Write the bank (manifest, card, CKN, loaded TSNs). The manifest lists only what is written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest.to_dict()
        manifest["tasks"] = [t.to_dict() for t in self.tasks]
        if not self._copy_familiarity(folder):  # the statistics describe the CKN: any subset of tasks keeps them
            manifest.pop("familiarity", None)  # ... but a manifest never claims statistics that are not there
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        (folder / CARD_FILE).write_text(render_model_card(manifest, repo_id=repo_id))
        save_module(self.ckn, bank_path(folder, "ckn"))
        for name, tsn in self.tsns.items():
            save_module(tsn, bank_path(folder, "tsn", name))
        return folder

    def _copy_familiarity(self, folder: Path) -> bool:
        """Copy ``familiarity/`` from the folder this bank was loaded from, if it has one; True if copied."""
        source = Path(self.source) / FAMILIARITY_DIR if self.source else None
        if not self.manifest.familiarity or source is None or not source.is_dir():
            return False
        if source.resolve() != (folder / FAMILIARITY_DIR).resolve():
            shutil.copytree(source, folder / FAMILIARITY_DIR, dirs_exist_ok=True)
        return True

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, tag: str | None = None,
                    private: bool | None = None, token: str | None = None, revision: str | None = None,
                    extra_files: Path | None = None) -> str:
        """Upload the bank as one commit (replacing an older bank's files), optionally tag it; returns the commit sha.

        ``extra_files``: a folder whose content is uploaded too (e.g. ``evaluation/``).
        """
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as tmp:
            staging = self.save_pretrained(Path(tmp) / "bank", repo_id=repo_id)
            if extra_files is not None:
                shutil.copytree(extra_files, staging / Path(extra_files).name, dirs_exist_ok=True)
            try:
                api.create_repo(repo_id, private=private, exist_ok=True)
                commit = api.upload_folder(
                    repo_id=repo_id, folder_path=staging, revision=revision,
                    commit_message=commit_message or f"Upload factor bank ({len(self.tsns)} tasks)",
                    delete_patterns=[MANIFEST_FILE, CARD_FILE, "ckn/*", "tsn/*", "evaluation/*",
                                     f"{FAMILIARITY_DIR}/*"],
                )
                if tag:
                    api.create_tag(repo_id, tag=tag, revision=commit.oid)
            except HfHubHTTPError as error:
                raise HubUnavailableError(f"pushing to {repo_id} failed: {error}") from error
            except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:
                raise HubUnavailableError(f"cannot reach the Hub to push {repo_id}: {error}") from error
        return commit.oid

    # ------------------------------------------------------------------ grow
    def add_task(self, spec: TaskSpec, tsn: TaskSpecificNetwork, *, replace: bool = False) -> FactorBank:
        """Add (or with ``replace=True`` swap) the factor of a new task, trained against this bank's frozen CKN.

        Nothing that is already in the bank changes: old tasks keep bit-identical outputs. Refused: a TSN
        trained with another CKN, a bank whose CKN weights changed since, a task name the bank already has.
        ``kf_model.growing.train_new_task`` trains such a TSN; ``save_pretrained`` / ``push_to_hub`` then
        write the grown bank. Returns the bank itself.
        """
        if tsn.task != spec:
            raise IncompatibleFactorsError(f"the TSN solves task {tsn.task.name!r} ({tsn.task.num_classes} classes), "
                                           f"not {spec.name!r} ({spec.num_classes} classes)")
        names = [t.name for t in self.manifest.tasks]
        if spec.name in names and not replace:
            raise TaskExistsError(f"this bank already has a task {spec.name!r}; pass replace=True (--replace) to "
                                  "swap its factor, or choose another name")
        recorded = self.manifest.ckn_fingerprint
        if tsn.ckn_fingerprint != recorded:
            raise IncompatibleFactorsError(
                f"TSN {spec.name!r} was trained with CKN {tsn.ckn_fingerprint[:12] or '(none recorded)'} but this "
                f"bank's CKN is {recorded[:12]}: train it against this bank (kf_model.growing.train_new_task)"
            )
        current = weights_fingerprint(self.ckn)
        if current != recorded:
            raise IncompatibleFactorsError(
                f"this bank's CKN weights changed since factorization (fingerprint {current[:12]}, recorded "
                f"{recorded[:12]}): its factors, old and new, would no longer be the ones that were trained"
            )
        if tsn.ckn_width != self.ckn.width:
            raise IncompatibleFactorsError(f"TSN {spec.name!r} expects CKN width {tsn.ckn_width}, not {self.ckn.width}")
        tasks = list(self.manifest.tasks)
        if spec.name in names:
            tasks[names.index(spec.name)] = spec
        else:
            tasks.append(spec)
        check_unique_tasks([t.name for t in tasks], "the grown bank")  # "Shape" next to "shape": one folder
        if len(tasks) > MAX_TASKS:
            raise InvalidConfigError(f"a bank holds at most {MAX_TASKS:,} tasks")
        self.manifest.tasks = tasks
        self.tsns[spec.name] = tsn.to(self.device).eval()
        self.tsns = {t.name: self.tsns[t.name] for t in tasks if t.name in self.tsns}
        return self

    def __repr__(self) -> str:
        return f"FactorBank(source={self.source!r}, tasks={list(self.tsns)}, ckn={self.manifest.ckn_fingerprint[:12]})"


def load_tsn(folder: Path, manifest: Manifest, name: str, source: str) -> TaskSpecificNetwork:
    """The TSN in ``tsn/<name>/``; its own config must describe the task the manifest gives that folder."""
    label = f"{source}: tsn/{name}"
    tsn = load_module(TaskSpecificNetwork, bank_path(folder, "tsn", name), label)
    expected = next(t for t in manifest.tasks if t.name == name)
    if tsn.task.name != name:
        raise IncompatibleFactorsError(f"{label}: the TSN in this folder was trained for task {tsn.task.name!r}, "
                                       f"not {name!r}")
    if tsn.task.labels != expected.labels:
        raise IncompatibleFactorsError(f"{label}: the TSN's classes differ from those {MANIFEST_FILE} gives the task")
    return tsn


def _select_tasks(manifest: Manifest, wanted: list[str] | None, source: str) -> list[str]:
    available = [t.name for t in manifest.tasks]
    if wanted is None:
        return available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise UnknownTaskError(f"unknown task(s) {name_list(unknown)} in {source}; available: "
                               f"{name_list(available, 12)}")
    if not wanted:
        raise EmptySelectionError(f"choose at least one task of {source}: {name_list(available)}")
    return wanted


class HubManifest(NamedTuple):
    manifest: Manifest
    commit: str  # the commit of factors.json: every later file of the bank is pinned to it
    folder: Path  # the local snapshot folder holding factors.json
    offline: bool  # True when the Hub could not be reached and the cache answered


def fetch_manifest(repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None,
                   local_files_only: bool = False, token: str | bool | None = None) -> HubManifest:
    """Download only ``factors.json`` of a Hub bank, e.g. to show its tasks before choosing which to pull.

    A metadata call first fails fast when the Hub is unreachable (the download functions would retry for
    ~20 s) and falls back to the local cache.
    """
    source = repo_id if revision is None else f"{repo_id}@{revision}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise BankNotFoundError(f"{repo_id!r} is not a valid Hub repo id (expected 'owner/name')") from error
    offline_reason = "local_files_only=True" if local_files_only else None
    if not local_files_only:
        with _hub_errors(source, revision):
            try:
                HfApi(token=token).model_info(repo_id, revision=revision)
            except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:  # unreachable: the cache may still answer
                offline_reason, local_files_only = f"{type(error).__name__}: {error}", True
    with _hub_errors(source, revision, offline_reason):
        path = Path(hf_hub_download(repo_id, MANIFEST_FILE, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only, token=token))
    return HubManifest(Manifest.read(path), path.parent.name, path.parent, local_files_only)


@contextmanager
def _hub_errors(source: str, revision: str | None, offline_reason: str | None = None) -> Iterator[None]:
    """huggingface_hub's errors -> kf's, with a message that names the bank."""
    repo_id = source.split("@")[0]
    try:
        yield
    except RepositoryNotFoundError as error:
        raise BankNotFoundError(f"Hub repo {repo_id!r} not found (or private: pass a token)") from error
    except RevisionNotFoundError as error:
        raise BankNotFoundError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from error
    except LocalEntryNotFoundError as error:  # before EntryNotFoundError: a subclass of it
        raise HubUnavailableError(
            f"cannot reach the Hub for {source} ({offline_reason}) and it is not in the local cache"
        ) from error
    except EntryNotFoundError as error:
        raise BankNotFoundError(f"{source} is not a factor bank: it has no {MANIFEST_FILE}") from error
    except HfHubHTTPError as error:
        raise HubUnavailableError(f"the Hub refused {source}: {error}") from error
    except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:
        raise HubUnavailableError(f"cannot reach the Hub for {source}: {error}") from error


def _download(repo_id: str, wanted: list[str] | None, revision: str | None, cache_dir: str | Path | None,
              local_files_only: bool, token: str | bool | None, source: str) -> tuple[Path, Manifest, list[str]]:
    """The manifest, then only the CKN and the wanted TSNs, at the manifest's commit.

    Pinning every file to one commit means a branch that moves mid-download cannot mix two banks.
    """
    hub = fetch_manifest(repo_id, revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    names = _select_tasks(hub.manifest, wanted, source)
    patterns = [f"ckn/{CONFIG_FILE}", f"ckn/{WEIGHTS_FILE}"]
    patterns += [f"tsn/{n}/{f}" for n in names for f in (CONFIG_FILE, WEIGHTS_FILE)]
    with _hub_errors(source, revision, "local_files_only=True" if hub.offline else None):
        folder = Path(snapshot_download(repo_id, revision=hub.commit, allow_patterns=patterns, cache_dir=cache_dir,
                                        local_files_only=hub.offline, token=token))
    return folder, hub.manifest, names
