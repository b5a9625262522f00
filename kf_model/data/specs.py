"""Small, JSON-able descriptions of tasks and inputs, shared by data, networks and banks."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kf_model.errors import InvalidConfigError, InvalidTaskNameError, name_list
from kf_model.limits import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_INPUT_SIZE,
    MAX_TASK_NAME,
    check_int,
    check_normalisation,
    check_text,
)

TASK_NAME_RULE = re.compile(r"[a-z0-9][a-z0-9_-]*")
# Folder names that Windows refuses whatever the extension: a bank must clone everywhere.
WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def validate_task_name(name: Any) -> str:
    """The one rule for task names, wherever they come from (manifest, TSN config, dataset, user).

    A task name becomes a folder (``tsn/<name>/``), so it is a slug: lowercase letters, digits, ``_`` and
    ``-``, starting with a letter or digit, at most 64 characters; no dots, slashes or reserved device names.
    """
    if not isinstance(name, str):
        raise InvalidTaskNameError(f"a task name must be a string, got {type(name).__name__}")
    shown = name if len(name) <= MAX_TASK_NAME else name[:MAX_TASK_NAME] + "..."
    if len(name) > MAX_TASK_NAME or not TASK_NAME_RULE.fullmatch(name) or name in WINDOWS_RESERVED:
        raise InvalidTaskNameError(
            f"invalid task name {shown!r}: task names are slugs of at most {MAX_TASK_NAME} characters "
            "(lowercase letters, digits, '_' and '-', starting with a letter or digit), e.g. 'pos_x'"
        )
    return name


def slugify(text: str) -> str:
    """The task name of a class or column name: ``"T-shirt/top"`` -> ``"t_shirt_top"``.

    Lowercase ASCII letters and digits are kept (accents dropped: ``"Café"`` -> ``"cafe"``), any other letter
    or digit becomes ``u<code point>`` (``"猫"`` -> ``"u732b"``) so that no class name is lost, runs of anything
    else become one ``_``, and the result is stripped of ``_`` and cut to 64 characters. Reserved device
    names get a trailing ``_`` (``"con"`` -> ``"con_"``). The result always passes `validate_task_name`.
    """
    if not isinstance(text, str):
        raise InvalidTaskNameError(f"a class or column name must be a string, got {type(text).__name__}")
    pieces = []
    for char in unicodedata.normalize("NFKD", text[:4 * MAX_TASK_NAME].lower()):
        if char.isascii() and char.isalnum():
            pieces.append(char)
        elif unicodedata.combining(char):
            continue  # the accent of a decomposed letter
        elif char.isalnum():
            pieces.append(f"_u{ord(char):04x}_")
        else:
            pieces.append("_")
    slug = re.sub(r"_+", "_", "".join(pieces)).strip("_")[:MAX_TASK_NAME].strip("_")
    if not slug:
        raise InvalidTaskNameError(f"{text[:MAX_TASK_NAME]!r} has no letter or digit to name a task after; "
                                   "rename the class or column")
    if slug in WINDOWS_RESERVED:
        slug += "_"
    return validate_task_name(slug)


def distinct_labels(names: Sequence[str]) -> list[str]:
    """A classifier's class names made distinct for a task: a name that is repeated gets its class index, as
    ImageNet's two "crane" classes (the bird, 134; the machine, 517) become "crane (134)" and "crane (517)"."""
    counts = Counter(names)
    return [f"{name} ({i})" if counts[name] > 1 else name for i, name in enumerate(names)]


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: its slug name, class names in index order, and a one-liner."""

    name: str
    labels: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        validate_task_name(self.name)
        if not isinstance(self.labels, list | tuple) or not 2 <= len(self.labels) <= MAX_CLASSES:
            count = len(self.labels) if isinstance(self.labels, list | tuple) else type(self.labels).__name__
            raise InvalidConfigError(f"task {self.name!r}: labels must be a list of 2 to {MAX_CLASSES:,} class "
                                     f"names, got {count}")
        for i, label in enumerate(self.labels):
            check_text(f"task {self.name!r}: labels[{i}]", label)
        seen: set[str] = set()
        twice = [label for label in self.labels if label in seen or seen.add(label)]
        if twice:  # an answer maps label -> probability: a repeated label would lose a class and its share
            raise InvalidConfigError(f"task {self.name!r}: label(s) {name_list(dict.fromkeys(twice))} appear more "
                                     "than once; each class needs its own name")
        check_text(f"task {self.name!r}: description", self.description)
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels), "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        if not isinstance(data, dict) or "name" not in data or "labels" not in data:
            raise InvalidConfigError(f"a task must be an object with 'name' and 'labels', got {str(data)[:80]}")
        return cls(name=data["name"], labels=data["labels"], description=data.get("description", ""))


@dataclass(frozen=True)
class InputSpec:
    """What a network expects: channels, square size, and the normalisation it applies inside."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        check_int("input_spec.channels", self.channels, 1, MAX_CHANNELS)
        check_int("input_spec.size", self.size, 1, MAX_INPUT_SIZE)
        mean = check_normalisation("input_spec.mean", self.mean, self.channels, positive=False)
        std = check_normalisation("input_spec.std", self.std, self.channels, positive=True)
        object.__setattr__(self, "mean", tuple(mean))
        object.__setattr__(self, "std", tuple(std))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        if not isinstance(data, dict) or not {"channels", "size", "mean", "std"} <= data.keys():
            raise InvalidConfigError(f"input_spec must be an object with channels, size, mean and std, got "
                                     f"{str(data)[:80]}")
        return cls(channels=data["channels"], size=data["size"], mean=data["mean"], std=data["std"])
