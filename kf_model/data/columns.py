"""A multi-task dataset's task columns: a dataset reduced to some of its tasks, and a task's column by name (adding
a task, transfer runs and task subsets all read one column of a multi-task dataset)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from kf_model.data.specs import TaskSpec
from kf_model.errors import UnknownTaskError


class TaskColumns(Dataset):
    """A multi-task dataset reduced to some of its task columns: ``(image, targets[columns])``.

    Keeps the wrapped dataset's batched ``__getitems__`` (dSprites renders a batch at once).
    """

    def __init__(self, dataset: Any, columns: list[int]) -> None:
        self.dataset, self.columns = dataset, list(columns)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, targets = self.dataset[index]
        return image, targets[self.columns]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        return [(image, targets[self.columns]) for image, targets in samples]


def task_column(tasks: list[TaskSpec], name: str, dataset: str) -> int:
    names = [t.name for t in tasks]
    if name not in names:
        raise UnknownTaskError(f"{dataset} has no task {name!r}; its tasks: {', '.join(names)}")
    return names.index(name)


__all__ = ["TaskColumns", "task_column"]
