"""What kf needs from a teacher, whatever library it comes from.

A teacher takes images in ``[0, 1]`` (it normalises inside, like every kf network: one preprocessing path)
and returns a :class:`~kf_model.models.TeacherOutput`: per-task logits, and the pooled features of its last
three stages, which InfoMax distils into the CKN. :class:`ExternalTeacher` gives a classifier from timm or
torchvision that interface; the stage features come from the library's own feature API, never from hand-typed
channel lists.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from kf_model.data.specs import InputSpec, TaskSpec, distinct_labels
from kf_model.errors import KFError
from kf_model.models import InputAdapter, TeacherOutput, count_parameters, global_pool, one_vs_rest_logits
from kf_model.models.layers import channels_last_on_cpu


class TeacherMismatchError(KFError):
    """A teacher whose classes or inputs do not match the data it is asked to teach on."""


def check_head(num_classes: int, tasks: list[TaskSpec], one_vs_rest: bool, source: str,
               label_names: list[str] | None = None) -> None:
    """A classifier's output: K one-vs-rest tasks, one K-way task, or (several labels) one head per task, the
    heads side by side in the classifier's outputs (``head_labels``)."""
    wanted, classes = len(head_labels(tasks, one_vs_rest)), head_labels(tasks, one_vs_rest)
    if num_classes != wanted and len(tasks) > 1 and not one_vs_rest:
        raise TeacherMismatchError(
            f"{source} predicts {num_classes} classes, but the data's {len(tasks)} labels "
            f"({', '.join(t.name for t in tasks[:5])}{', ...' if len(tasks) > 5 else ''}) need {wanted} outputs (one "
            "head per label): fit the heads with train/train_teacher.py --from ..., or pick one label with "
            "--label-columns")
    if num_classes != wanted:
        raise TeacherMismatchError(
            f"{source} predicts {num_classes} classes but the data has {wanted}: fit a head on your data first, "
            f"e.g. python train/train_teacher.py --from {source} --teacher-weights FILE.safetensors --data-dir DIR "
            "--output-dir runs/teacher (add --finetune to train the whole network)")
    if label_names and distinct_labels(label_names) != classes:  # a repeated name carries its index in a task
        pairs = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(distinct_labels(label_names), classes))
                 if a != b][:3]
        raise TeacherMismatchError(f"{source}'s classes are not the data's, in order ({'; '.join(pairs)})")


def head_labels(tasks: list[TaskSpec], one_vs_rest: bool) -> list[str]:
    """The classifier's output names: the classes of one-vs-rest tasks, a K-way task's labels, or for several
    labels ``task=label`` of every task in turn (one head per task)."""
    if one_vs_rest:
        return [t.labels[1] for t in tasks]
    if len(tasks) == 1:
        return list(tasks[0].labels)
    return [f"{t.name}={label}" for t in tasks for label in t.labels]


class ExternalTeacher(nn.Module):
    """A classifier from another library as a kf teacher; subclasses say how its stages are read."""

    def __init__(self, model: nn.Module, *, source: str, architecture: str, input_spec: InputSpec,
                 tasks: list[TaskSpec], one_vs_rest: bool, feature_widths: list[int]) -> None:
        super().__init__()
        self.model = model  # what forward runs (for torchvision: a feature extractor over the network)
        self.__dict__["network"] = model  # the library's own module, for saving (not registered twice)
        self.source, self.architecture = source, architecture
        self.input_spec = input_spec
        self.tasks = list(tasks)
        self.one_vs_rest = one_vs_rest
        self._feature_widths = list(feature_widths)
        self.adapter = InputAdapter(input_spec.channels, list(input_spec.mean), list(input_spec.std), False)

    @property
    def feature_widths(self) -> list[int]:
        return list(self._feature_widths)

    def stages_and_logits(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """(feature maps of the last 3 stages, class logits) of normalised images."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> TeacherOutput:
        maps, class_logits = self.stages_and_logits(channels_last_on_cpu(self.adapter(x)))  # as the timm CKN reads
        features = [global_pool(m) if m.ndim == 4 else m for m in maps]
        if self.one_vs_rest:
            binary = one_vs_rest_logits(class_logits)
            return TeacherOutput({t.name: binary[:, i] for i, t in enumerate(self.tasks)}, features, class_logits)
        if len(self.tasks) == 1:
            return TeacherOutput({self.tasks[0].name: class_logits}, features, None)
        heads = class_logits.split([t.num_classes for t in self.tasks], dim=1)  # one head per task, side by side
        return TeacherOutput({t.name: h for t, h in zip(self.tasks, heads)}, features, None)

    def describe(self) -> dict[str, Any]:
        """The teacher summary a bank's manifest and model card show."""
        kind = ("K-way classifier read as one-vs-rest tasks" if self.one_vs_rest else "K-way classifier"
                if len(self.tasks) == 1 else f"{len(self.tasks)} heads, one per task")
        return {"description": f"{self.architecture} ({self.source}) {kind}", "source": self.source,
                "architecture": self.architecture, "params": count_parameters(self.model),
                "input_spec": self.input_spec.to_dict(), "one_vs_rest": self.one_vs_rest}
