"""The bank side of growing: where the bank lives (a folder or a Hub commit), the grown bank written and
recorded (factors.json, model card, evaluation/), and pushed back as one commit.

The training side (a new TSN on the frozen CKN) is ``kf_model.training.add_task``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

from kf_model.bank import (
    CARD_FILE,
    CONFIG_FILE,
    EVALUATION_DIR,
    MANIFEST_FILE,
    TRANSPORT_ERRORS,
    WEIGHTS_FILE,
    FactorBank,
    bank_path,
    fetch_manifest,
    save_module,
)
from kf_model.bank.card import render_model_card
from kf_model.bank.growth import evaluation_problems, write_atomically
from kf_model.bank.manifest import RESULTS_JSON, RESULTS_MD
from kf_model.data.specs import TaskSpec
from kf_model.errors import (
    BankNotFoundError,
    HubUnavailableError,
    IncompatibleFactorsError,
)
from kf_model.models import (
    TaskSpecificNetwork,
)

# ============================================================================= where the bank lives

@dataclass
class BankLocation:
    """``--bank``: a local folder, or a Hub repo pinned to the commit it was pulled at."""

    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None  # as given (branch, tag or sha)
    commit: str | None = None  # the commit pulled: a push must start from it

    @classmethod
    def parse(cls, value: str) -> BankLocation:
        path = Path(value)
        if path.is_dir():
            return cls(folder=path)
        if path.is_absolute() or value.startswith((".", "~")) or path.exists():  # a path, never a repo id
            raise BankNotFoundError(f"--bank {value!r}: {'not a folder' if path.exists() else 'no such folder'}; "
                                    "give a bank folder or a Hub repo 'org/repo[@revision]'")
        repo_id, at, revision = value.partition("@")
        if not repo_id or "@" in revision or (at and not revision):
            raise BankNotFoundError(f"--bank {value!r} is neither a folder nor 'org/repo' or 'org/repo@revision'")
        return cls(repo_id=repo_id, revision=revision or None)

    def __str__(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return self.repo_id + (f"@{self.revision}" if self.revision else "")

    def load(self) -> FactorBank:
        """The whole bank (every task: growing writes them all back); a Hub bank at one pinned commit."""
        if self.folder is not None:
            return FactorBank.from_pretrained(self.folder)
        hub = fetch_manifest(self.repo_id, self.revision)
        self.commit = hub.commit
        return FactorBank.from_pretrained(self.repo_id, revision=hub.commit)


def record_added_task(manifest: dict[str, Any], spec: TaskSpec, evaluation: dict[str, Any] | None,
                      provenance: dict[str, Any]) -> dict[str, Any]:
    """``factors.json`` content after adding ``spec``: task list, per-task metrics, how it was trained."""
    metrics = manifest.setdefault("metrics", {})
    if evaluation is not None:
        metrics.setdefault("tasks", {})[spec.name] = {
            "accuracy": evaluation["accuracy"], "teacher_accuracy": evaluation["teacher_accuracy"],
            "kd_accuracy": None}
    if "summary" in metrics:  # the summary is the original factorization's: say which tasks it leaves out
        added = [n for n in manifest.get("training", {}).get("added_tasks", {}) if n != spec.name] + [spec.name]
        metrics["summary"]["added_tasks"] = ", ".join(added)
    training = manifest.setdefault("training", {})
    training.setdefault("added_tasks", {})[spec.name] = provenance
    if provenance.get("command"):
        commands = training.setdefault("commands", [])
        if provenance["command"] not in commands:
            commands.append(provenance["command"])
    return manifest


def write_grown_bank(folder: Path, bank: FactorBank, spec: TaskSpec, manifest: dict[str, Any], *,
                     repo_id: str | None = None) -> list[str]:
    """Write the new factor, ``factors.json`` and ``README.md`` into ``folder``; old files are not touched.

    Returns the paths written, relative to ``folder`` (what a Hub commit must upload).
    """
    target = bank_path(folder, "tsn", spec.name)
    if target.exists():  # --replace: no stale file of the old factor may survive
        shutil.rmtree(target)
    save_module(bank.tsns[spec.name], target)
    manifest["tasks"] = [t.to_dict() for t in bank.manifest.tasks]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    (folder / CARD_FILE).write_text(render_model_card(manifest, repo_id=repo_id))
    return [MANIFEST_FILE, CARD_FILE, f"tsn/{spec.name}/{CONFIG_FILE}", f"tsn/{spec.name}/{WEIGHTS_FILE}"]


ADDED_SECTION = "## Tasks added to the bank after this evaluation"


def added_tasks_markdown(added: dict[str, Any]) -> str:
    """The section of ``results.md`` that lists the factors added after the bank was evaluated."""
    lines = [ADDED_SECTION, "",
             "Each new factor (the frozen CKN + its new TSN) was scored by `train/add_task.py` when it was added; "
             "the tables above are the original evaluation and do not include it. Accuracies in %.", "",
             "| task | factor | teacher | images | split | replaces an evaluated factor |",
             "|---|---:|---:|---:|---|---|"]
    for name, entry in added.items():
        teacher = entry.get("teacher_accuracy")
        lines.append(f"| {name} | {100 * entry['accuracy']:.2f} | "
                     f"{'n/a' if teacher is None else f'{100 * teacher:.2f}'} | {entry['samples']:,} | "
                     f"{entry.get('dataset') or ''} {entry.get('split') or ''} | "
                     f"{'yes' if entry.get('replaces_evaluated_factor') else 'no'} |")
    return "\n".join(lines) + "\n"


def record_added_evaluation(folder: Path, spec: TaskSpec, evaluation: dict[str, Any] | None,
                            ckn_fingerprint: str, provenance: dict[str, Any]) -> list[str]:
    """Add the new factor's accuracy to the bank's ``evaluation/results.json`` and ``results.md``.

    Every entry already there is kept as it is (the original evaluation's tables and means describe the
    factorization that was evaluated); the new task goes to ``added_tasks`` and to a section appended to
    ``results.md`` (replaced, not repeated, when another task is added later). Nothing is written when the
    bank has no evaluation, no accuracy was measured (``--eval-limit 0``) or the evaluation is of another
    CKN. Returns the paths written, relative to ``folder``.
    """
    results_path = folder / EVALUATION_DIR / RESULTS_JSON
    if evaluation is None or not results_path.is_file():
        return []
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError):
        return []  # an unreadable evaluation is not ours to repair
    if evaluation_problems(results) or \
            (results.get("models") or {}).get("bank", {}).get("ckn_fingerprint") != ckn_fingerprint:
        return []
    evaluated = (results.get("accuracy") or {}).get("factor") or {}
    added = results.setdefault("added_tasks", {})
    added[spec.name] = {"accuracy": evaluation["accuracy"], "teacher_accuracy": evaluation.get("teacher_accuracy"),
                        "samples": evaluation["samples"], "dataset": provenance.get("dataset"), "split": "test",
                        "replaces_evaluated_factor": spec.name in evaluated, "command": provenance.get("command")}
    results_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    markdown_path = folder / EVALUATION_DIR / RESULTS_MD
    original = markdown_path.read_text() if markdown_path.is_file() else ""
    original = original.split("\n" + ADDED_SECTION)[0].rstrip("\n")
    markdown_path.write_text((original + "\n\n" if original else "") + added_tasks_markdown(added))
    return [f"{EVALUATION_DIR}/{RESULTS_JSON}", f"{EVALUATION_DIR}/{RESULTS_MD}"]


def fetch_evaluation(location: BankLocation, folder: Path) -> None:
    """Copy a Hub bank's ``evaluation/results.json`` and ``results.md`` (at the pulled commit) into ``folder``."""
    for name in (RESULTS_JSON, RESULTS_MD):
        try:
            path = hf_hub_download(location.repo_id, f"{EVALUATION_DIR}/{name}", revision=location.commit)
        except EntryNotFoundError:
            continue  # a bank that was never evaluated
        except (*TRANSPORT_ERRORS, HfHubHTTPError) as error:
            raise HubUnavailableError(f"cannot fetch {EVALUATION_DIR}/{name} of {location}: {error}") from error
        target = folder / EVALUATION_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def grow_folder(folder: Path, tsn: TaskSpecificNetwork, *, trained_with: str, replace: bool,
                evaluation: dict[str, Any] | None, provenance: dict[str, Any]) -> FactorBank:
    """Add ``tsn`` to the bank in ``folder``, in place, after checking that its CKN is still the one trained with.

    The folder is re-read now, not trusted from when training started: its CKN file (checked against its
    manifest by ``from_pretrained``) must still have the fingerprint the TSN was trained with.
    """
    bank = FactorBank.from_pretrained(folder)
    if bank.manifest.ckn_fingerprint != trained_with:
        raise IncompatibleFactorsError(
            f"the CKN of {folder} changed since the new TSN was trained (trained with {trained_with[:12]}, the "
            f"folder now holds {bank.manifest.ckn_fingerprint[:12]}): train the task again against this bank"
        )
    bank.add_task(tsn.task, tsn, replace=replace)

    def write(staging: Path) -> None:  # on a copy of the folder, swapped in when complete (all or nothing)
        manifest = record_added_task(json.loads((staging / MANIFEST_FILE).read_text()), tsn.task, evaluation,
                                     provenance)
        write_grown_bank(staging, bank, tsn.task, manifest)
        record_added_evaluation(staging, tsn.task, evaluation, trained_with, provenance)

    write_atomically(folder, write)
    return bank


def push_grown_bank(folder: Path, paths: list[str], location: BankLocation, *, create_pr: bool = False,
                    branch: str | None = None, token: str | None = None) -> dict[str, Any]:
    """One commit of only the changed files onto the commit the bank was pulled at (or a pull request).

    ``parent_commit`` makes the Hub refuse the commit if the branch moved since the pull, so a bank whose
    CKN was replaced in between can never receive a TSN trained against the old one.
    """
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p in paths]
    name = Path(paths[-1]).parent.name
    try:
        info = api.create_commit(location.repo_id, operations, revision=branch,
                                 commit_message=f"Add task {name!r} (trained on the frozen CKN)",
                                 parent_commit=location.commit, create_pr=create_pr)
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 412:
            raise IncompatibleFactorsError(
                f"{location.repo_id} changed since the bank was pulled at {str(location.commit)[:12]}: pull the "
                "new revision and train the task again (its CKN may differ)") from error
        raise HubUnavailableError(f"pushing to {location.repo_id} failed: {error}") from error
    except TRANSPORT_ERRORS as error:
        raise HubUnavailableError(f"cannot reach the Hub to push {location.repo_id}: {error}") from error
    return {"repo_id": location.repo_id, "commit": info.oid, "parent": location.commit,
            "pull_request": info.pr_url}
