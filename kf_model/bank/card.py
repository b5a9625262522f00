"""The model card (README.md) of a factor bank: Hub metadata + what a person needs to use it."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCardData

from kf_model.bank.growth import manifest_problems
from kf_model.data.specs import TaskSpec

HUB_DATASET_IDS = {"fashion-mnist": "zalando-datasets/fashion_mnist", "dsprites": "dsprites"}


def _metadata(manifest: dict[str, Any]) -> str:
    dataset = manifest.get("dataset")
    card = ModelCardData(
        library_name="kf",
        license="apache-2.0",
        tags=["knowledge-factorization", "kf", "image-classification", "multi-task", "pytorch"],
        datasets=[HUB_DATASET_IDS.get(dataset, dataset)] if dataset else None,
        pipeline_tag="image-classification",
        metrics=["accuracy"],
    )
    return card.to_yaml()


def metrics_table(tasks: list[TaskSpec], metrics: dict[str, Any]) -> str | None:
    """Per-task and summary metrics as Markdown tables (shared by the model card and the app's Explain tab)."""
    per_task = metrics.get("tasks", {})
    if not per_task or manifest_problems({"metrics": metrics}):  # a hostile manifest's tables are left out
        return None
    columns = sorted({key for values in per_task.values() for key in values})
    lines = ["| task | " + " | ".join(columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    for task in tasks:
        values = per_task.get(task.name, {})
        cells = [format_value(values.get(column)) for column in columns]
        lines.append(f"| {task.name} | " + " | ".join(cells) + " |")
    summary = metrics.get("summary", {})
    if summary:
        lines += ["", "| summary | value |", "|---|---|"]
        lines += [f"| {key} | {format_value(value)} |" for key, value in summary.items()]
    return "\n".join(lines)


def format_value(value: Any) -> str:
    """One number format for every table we write: tiny values in scientific notation, counts with separators."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def render_model_card(manifest: dict[str, Any], repo_id: str | None = None) -> str:
    """README.md text for a bank whose manifest (``factors.json`` content) is given."""
    tasks = [TaskSpec.from_dict(t) for t in manifest["tasks"]]
    source = repo_id or "path/to/this/folder"
    first_two = [t.name for t in tasks[:2]]
    task_rows = "\n".join(
        f"| `{t.name}` | {t.num_classes} | {t.description} |" for t in tasks
    )
    training = manifest.get("training", {})
    teacher = manifest.get("teacher", {})
    commands = training.get("commands", [])
    command_block = ("```bash\n" + "\n".join(commands) + "\n```\n") if commands else "Not recorded.\n"
    spec = manifest["input_spec"]
    results = metrics_table(tasks, manifest.get("metrics", {})) or "No evaluation recorded yet."
    return f"""---
{_metadata(manifest)}
---

# Factor bank: {manifest.get("dataset") or "custom"} ({len(tasks)} tasks)

A **knowledge factorization** of a multi-task teacher (Yang, Ye, Wang, *Factorizing Knowledge
in Neural Networks*, ECCV 2022): one shared Common Knowledge Network (`ckn/`) and one small
Task-Specific Network per task (`tsn/<task>/`). Pick any subset of tasks: the assembled network
runs the CKN once plus the chosen TSNs, with no fine-tuning, and each task's output is exactly
that of its own factor network.

## Tasks
| task | classes | description |
|---|---|---|
{task_rows}

Input: {spec["channels"]}-channel {spec["size"]}x{spec["size"]} images scaled to [0, 1]
(the networks normalise inside). CKN fingerprint: `{manifest["ckn_fingerprint"][:16]}`.

## Usage
```python
from PIL import Image
from kf_model import FactorBank

bank = FactorBank.from_pretrained("{source}", tasks={first_two!r})  # downloads only these factors
net = bank.assemble({first_two!r})
logits = net(bank.preprocess(Image.open("image.png")))  # {{task: logits}}
```

## Results
{results}

## Teacher and training
Teacher: {teacher.get("description", "not recorded")}.

{command_block}
Files: `factors.json` (manifest), `ckn/` and `tsn/<task>/` (each `config.json` + `model.safetensors`).
Only safetensors weights are used; kf never unpickles files.
"""
