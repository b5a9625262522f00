"""``factors.json``: what a bank holds (tasks, input spec, CKN fingerprint, summaries), checked as data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import (
    CorruptWeightsError,
    EmptySelectionError,
    IncompatibleFactorsError,
    InvalidArgumentError,
    InvalidConfigError,
    UnknownTaskError,
    name_list,
)
from kf_model.limits import MAX_LABELS, MAX_MANIFEST_BYTES, MAX_TASKS, MAX_TEXT, read_json

FORMAT_VERSION = 1
MANIFEST_FILE = "factors.json"
CARD_FILE = "README.md"
RESULTS_JSON = "results.json"  # in evaluation/: what train/evaluate.py measured (kf_model.evaluation)
RESULTS_MD = "results.md"
EVALUATION_DIR = "evaluation"  # optional: evaluation outputs (results.json, results.md, figures)
FAMILIARITY_DIR = "familiarity"  # optional: statistics of the CKN's features on the training data
# the files of familiarity/, named one by one: a download never pulls whatever else a repo put in that folder
FAMILIARITY_FILES = (f"{FAMILIARITY_DIR}/config.json", f"{FAMILIARITY_DIR}/model.safetensors")


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
    familiarity: dict[str, Any] = field(default_factory=dict)  # summary of familiarity/ (kf_model.serving.familiarity)
    untested_tasks: dict[str, str] = field(default_factory=dict)  # task: why its "yes" was never checked (optional)

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
        if self.untested_tasks:
            data["untested_tasks"] = self.untested_tasks
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
        labels = sum(len(t["labels"]) for t in tasks if isinstance(t, dict) and isinstance(t.get("labels"), list))
        if labels > MAX_LABELS:
            raise CorruptWeightsError(f"{source}: its tasks have {labels:,} labels in all; kf reads at most "
                                      f"{MAX_LABELS:,}")
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
                   familiarity=familiarity if isinstance(familiarity, dict) else {},
                   untested_tasks=_untested_tasks(data.get("untested_tasks"), [t.name for t in specs], source))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """``factors.json``, its size bounded before it is parsed (a 180 MB manifest took 40 s and 1.3 GB)."""
        data = read_json(path, f"the manifest {path}", max_bytes=MAX_MANIFEST_BYTES, error=CorruptWeightsError)
        return cls.from_dict(data, source=str(path))


def check_unique_tasks(names: Sequence[str], source: str) -> None:
    """A task may appear once; names are compared case-insensitively, as folders are on macOS and Windows."""
    seen: set[str] = set()
    twice = [n for n in names if n.lower() in seen or seen.add(n.lower())]
    if twice:
        raise CorruptWeightsError(f"{source} lists task(s) {name_list(twice)} more than once")


def _optional_text(value: Any, limit: int = 500) -> str | None:
    """A short free-text manifest field: a string, cut at ``limit`` characters; anything else is ignored."""
    return value.strip()[:limit] or None if isinstance(value, str) else None


def _untested_tasks(value: Any, names: list[str], source: str) -> dict[str, str]:
    """``{task: reason}``: the bank's tasks whose positive answers were never checked (e.g. no photograph of the
    group among the distillation images), each with a short reason the app shows next to its answer."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise CorruptWeightsError(f"{source}: 'untested_tasks' must be an object of task name: reason")
    unknown = [k for k in value if k not in names]
    if unknown:
        raise CorruptWeightsError(f"{source}: 'untested_tasks' names tasks the bank does not have: "
                                  f"{name_list(unknown[:5])}")
    return {name: _optional_text(reason, 300) or "untested" for name, reason in value.items()}


def task_list(tasks: object, what: str = "tasks") -> list[str]:
    """``tasks`` as given to the Python API (a name, or an iterable of names) -> names without repeats; anything
    else is refused in words (not a TypeError from a dict lookup: ``tasks=5``, ``[["shape"]]``)."""
    names = [tasks] if isinstance(tasks, str) else tasks
    if isinstance(names, bytes) or not isinstance(names, Iterable):
        raise InvalidArgumentError(f"{what} must be a task name or a list of task names, got {str(tasks)[:80]!r}")
    names = list(names)
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(f"{what} must be task names (strings), got {str(names)[:80]!r}")
    return list(dict.fromkeys(names))


def select_tasks(manifest: Manifest, wanted: list[str] | None, source: str) -> list[str]:
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
