"""Small, JSON-able descriptions of tasks and inputs, shared by data, networks and banks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: its slug name, class names in index order, and a one-liner."""

    name: str
    labels: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels), "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(name=data["name"], labels=tuple(data["labels"]), description=data.get("description", ""))


@dataclass(frozen=True)
class InputSpec:
    """What a network expects: channels, square size, and the normalisation it applies inside."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(channels=int(data["channels"]), size=int(data["size"]),
                   mean=tuple(data["mean"]), std=tuple(data["std"]))
