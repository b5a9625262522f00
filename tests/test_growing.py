"""Growing a bank (kf_model.training.add_task, FactorBank.add_task, train/add_task.py): tiny networks, a few steps."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from kf_model import FactorBank
from kf_model.bank import load_module
from kf_model.bank.growing import grow_folder
from kf_model.data import DSPRITES_INPUT_SPEC, DSPRITES_TASKS, TaskSpec, load_dataset
from kf_model.data.columns import TaskColumns
from kf_model.errors import IncompatibleFactorsError, KFError, TaskExistsError, UnknownTaskError
from kf_model.models import CommonKnowledgeNetwork, EncoderConfig, TaskSpecificNetwork, Teacher
from kf_model.training import backbone_config, run
from kf_model.training.add_task import AddTaskJob, new_tsn, train_new_task
from tests.test_networks import randomize_batchnorm
from tests.test_training import make_teacher

ROOT = Path(__file__).resolve().parents[1]
OLD = DSPRITES_TASKS[:3]  # shape, scale, orientation: the bank; pos_x / pos_y are added
POS_X = DSPRITES_TASKS[3]


def make_bank(seed: int = 0) -> FactorBank:
    """A tiny dSprites bank of 3 tasks with non-trivial BatchNorm statistics (so freezing them matters)."""
    torch.manual_seed(seed)
    ckn = CommonKnowledgeNetwork(backbone_config("cnn", 4, 3, 2, True, DSPRITES_INPUT_SPEC))
    encoder = asdict(EncoderConfig(in_channels=1, widths=[4, 4], strides=[4, 4], coord_channels=True,
                                   mean=list(DSPRITES_INPUT_SPEC.mean), std=list(DSPRITES_INPUT_SPEC.std)))
    tsns = [TaskSpecificNetwork(t.to_dict(), encoder, ckn.width) for t in OLD]
    randomize_batchnorm(ckn, *tsns)
    return FactorBank.from_modules(ckn, tsns, input_spec=DSPRITES_INPUT_SPEC, dataset="dsprites",
                                   teacher={"description": "test teacher"},
                                   training={"commands": ["python train/factorize.py ..."]})


def outputs(bank: FactorBank, x: torch.Tensor, tasks=None) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return bank.assemble(tasks)(x)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pos_x_data(limit: int = 48):
    return TaskColumns(load_dataset("dsprites", "train", limit=limit), [3])


def common(output_dir: Path, bank: str, *extra: str, task: str = "pos_x") -> list[str]:
    return ["--bank", bank, "--task", task, "--dataset", "dsprites", "--limit", "32", "--batch-size", "8",
            "--max-steps", "3", "--warmup-steps", "1", "--log-every", "1", "--cpu", "--num-threads", "1",
            "--eval-limit", "16", "--output-dir", str(output_dir), *extra]


@pytest.fixture
def x() -> torch.Tensor:
    return load_dataset("dsprites", "test", limit=8).get_batch(torch.arange(8))[0]


# ----------------------------------------------------------------------------- Python API

def test_add_task_keeps_old_outputs_bit_identical_and_assembles_exactly(tmp_path: Path, x: torch.Tensor) -> None:
    bank = make_bank()
    before = outputs(bank, x)
    fingerprint = bank.manifest.ckn_fingerprint
    tsn = train_new_task(bank, POS_X, pos_x_data(), steps=3, batch_size=8)
    assert tsn.ckn_fingerprint == fingerprint
    bank.add_task(POS_X, tsn)
    assert [t.name for t in bank.tasks] == ["shape", "scale", "orientation", "pos_x"]
    after = outputs(bank, x)
    for name, logits in outputs(bank, x, list(before)).items():  # the same assembly as before: bit for bit
        assert torch.equal(logits, before[name]), name  # the frozen CKN and old TSNs did not move
    factor = bank.factor("pos_x")(x)
    for subset in (["pos_x"], ["shape", "pos_x"], ["pos_x", "orientation", "scale"]):
        assert (outputs(bank, x, subset)["pos_x"] - factor).abs().max() <= 1e-5

    reloaded = FactorBank.from_pretrained(bank.save_pretrained(tmp_path / "grown"))
    for name, logits in outputs(reloaded, x).items():
        assert torch.equal(logits, after[name]), name


def test_add_task_refusals(x: torch.Tensor) -> None:
    bank = make_bank()
    other = make_bank(seed=1)
    foreign = new_tsn(other, POS_X)  # stamped with another CKN
    with pytest.raises(IncompatibleFactorsError, match=r"trained with CKN .* but this bank's CKN is"):
        bank.add_task(POS_X, foreign)
    unstamped = TaskSpecificNetwork(POS_X.to_dict(), asdict(foreign.encoder_config), 16)
    with pytest.raises(IncompatibleFactorsError, match="none recorded"):
        bank.add_task(POS_X, unstamped)
    with pytest.raises(IncompatibleFactorsError, match="solves task 'pos_x'"):
        bank.add_task(DSPRITES_TASKS[4], new_tsn(bank, POS_X))

    shape_again = new_tsn(bank, OLD[0])
    with pytest.raises(TaskExistsError, match="already has a task 'shape'"):
        bank.add_task(OLD[0], shape_again)
    old_scale = outputs(bank, x, ["scale"])["scale"]
    bank.add_task(OLD[0], shape_again, replace=True)  # swaps the factor, keeps the task's place
    assert [t.name for t in bank.tasks] == ["shape", "scale", "orientation"]
    assert bank.tsns["shape"] is shape_again
    assert torch.equal(outputs(bank, x, ["scale"])["scale"], old_scale)

    with torch.no_grad():  # the CKN changed after the TSN was trained against it
        next(bank.ckn.parameters()).add_(1.0)
    with pytest.raises(IncompatibleFactorsError, match="CKN weights changed since factorization"):
        bank.add_task(POS_X, new_tsn(bank, POS_X))


def test_train_new_task_learns_with_a_teacher_and_refuses_one_without_the_task(tmp_path: Path) -> None:
    bank = make_bank()
    teacher = load_module(Teacher, make_teacher(tmp_path / "teacher", "dsprites"), "teacher")
    tsn = train_new_task(bank, POS_X, pos_x_data(), steps=2, batch_size=8, teacher=teacher)
    assert tsn.task == POS_X
    renamed = TaskSpec("position", POS_X.labels, "x")
    with pytest.raises(UnknownTaskError, match="no task 'position' to distil from"):
        train_new_task(bank, renamed, pos_x_data(), steps=1, batch_size=8, teacher=teacher)


# ----------------------------------------------------------------------------- train/add_task.py, folder

def test_add_task_script_grows_a_folder_in_place(tmp_path: Path, x: torch.Tensor) -> None:
    folder = make_bank().save_pretrained(tmp_path / "bank")
    old_files = digest(folder)
    before = outputs(FactorBank.from_pretrained(folder), x)
    teacher = make_teacher(tmp_path / "teacher", "dsprites")
    result = run(AddTaskJob, common(tmp_path / "run", str(folder), "--teacher", str(teacher), "--val-size", "16"))
    assert result.summary["validation"]["accuracy"].keys() == {"pos_x"}
    assert result.summary["final_train_terms"].keys() >= {"ce", "aux_ce", "kd", "infomin"}

    files = digest(folder)
    changed = sorted(k for k in files if old_files.get(k) != files[k])
    assert changed == ["README.md", "factors.json", "tsn/pos_x/config.json", "tsn/pos_x/model.safetensors"]
    grown = FactorBank.from_pretrained(folder)
    for name, logits in before.items():
        assert torch.equal(outputs(grown, x)[name], logits), name
    assert (outputs(grown, x, ["orientation", "pos_x"])["pos_x"] - grown.factor("pos_x")(x)).abs().max() <= 1e-5
    manifest = json.loads((folder / "factors.json").read_text())
    assert [t["name"] for t in manifest["tasks"]][-1] == "pos_x"
    assert manifest["training"]["added_tasks"]["pos_x"]["ckn_fingerprint"] == manifest["ckn_fingerprint"]
    assert 0.0 <= manifest["metrics"]["tasks"]["pos_x"]["accuracy"] <= 1.0
    card = (folder / "README.md").read_text()
    assert "| `pos_x` | 32 |" in card and "train/add_task.py" in card
    assert (tmp_path / "run" / "tsn" / "pos_x" / "model.safetensors").is_file()

    with pytest.raises(TaskExistsError, match="already has a task 'pos_x'; pass --replace"):
        run(AddTaskJob, common(tmp_path / "again", str(folder)))
    assert not (tmp_path / "again" / "log.jsonl").exists()  # refused before training
    run(AddTaskJob, common(tmp_path / "replace", str(folder), "--replace", "--seed", "1"))
    assert [t.name for t in FactorBank.from_pretrained(folder).tasks].count("pos_x") == 1
    with pytest.raises(UnknownTaskError, match="dsprites has no task 'colour'"):
        run(AddTaskJob, common(tmp_path / "x", str(folder), task="colour"))


def test_a_folder_whose_ckn_changed_during_training_is_refused(tmp_path: Path) -> None:
    folder = make_bank().save_pretrained(tmp_path / "bank")
    trained_with = FactorBank.from_pretrained(folder).manifest.ckn_fingerprint
    tsn = new_tsn(FactorBank.from_pretrained(folder), POS_X)
    make_bank(seed=3).save_pretrained(folder)  # someone refactorized the bank meanwhile
    with pytest.raises(IncompatibleFactorsError, match=r"CKN of .* changed since the new TSN was trained"):
        grow_folder(folder, tsn, trained_with=trained_with, replace=False, evaluation=None, provenance={})
    assert not (folder / "tsn" / "pos_x").exists()


def test_script_errors_have_no_traceback(tmp_path: Path) -> None:
    folder = make_bank().save_pretrained(tmp_path / "bank")
    result = subprocess.run([sys.executable, str(ROOT / "train" / "add_task.py"),
                             *common(tmp_path / "run", str(folder), task="shape")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode != 0
    assert "error: " in result.stderr and "already has a task 'shape'" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(KFError, match="need a --bank org/repo"):
        run(AddTaskJob, common(tmp_path / "run2", str(folder), "--push-to-hub"))


def evaluated_bank(folder: Path, tmp_path: Path) -> Path:
    """A saved bank with an evaluation/ folder (results.json, results.md) as train/evaluate.py leaves it."""
    from accelerate import Accelerator

    from kf_model.evaluation import evaluate, update_bank, write_report

    make_bank().save_pretrained(folder)
    teacher = load_module(Teacher, make_teacher(tmp_path / "eval-teacher", "dsprites"), "teacher")
    results = evaluate(teacher, None, FactorBank.from_pretrained(folder), load_dataset("dsprites", "test", limit=16),
                       accelerator=Accelerator(cpu=True), batch_size=8, probe_samples=None, show_progress=False,
                       dataset_name="dsprites", split="test")
    write_report(results, tmp_path / "report", plots=False)
    update_bank(folder, results, tmp_path / "report")
    return folder


def test_adding_a_task_records_its_accuracy_in_the_evaluation_and_keeps_the_old_entries(tmp_path: Path) -> None:
    folder = evaluated_bank(tmp_path / "bank", tmp_path)
    before = json.loads((folder / "evaluation" / "results.json").read_text())
    report = (folder / "evaluation" / "results.md").read_text()
    run(AddTaskJob, common(tmp_path / "run", str(folder)))
    after = json.loads((folder / "evaluation" / "results.json").read_text())
    added = after.pop("added_tasks")
    assert after == before  # every old entry as it was
    manifest = json.loads((folder / "factors.json").read_text())
    assert added["pos_x"]["accuracy"] == manifest["metrics"]["tasks"]["pos_x"]["accuracy"]
    assert added["pos_x"]["samples"] == 16 and added["pos_x"]["replaces_evaluated_factor"] is False
    assert "train/add_task.py" in added["pos_x"]["command"]
    markdown = (folder / "evaluation" / "results.md").read_text()
    assert markdown.startswith(report.rstrip("\n")) and "| pos_x | " in markdown.split(report.rstrip("\n"))[1]

    run(AddTaskJob, common(tmp_path / "run2", str(folder), task="pos_y"))  # a second one: one section, two rows
    markdown = (folder / "evaluation" / "results.md").read_text()
    assert markdown.count("## Tasks added") == 1 and "| pos_x | " in markdown and "| pos_y | " in markdown
    added = json.loads((folder / "evaluation" / "results.json").read_text())["added_tasks"]
    assert list(added) == ["pos_x", "pos_y"]


def test_an_evaluation_of_another_ckn_or_without_accuracy_is_left_alone(tmp_path: Path) -> None:
    from kf_model.bank.growing import record_added_evaluation

    folder = evaluated_bank(tmp_path / "bank", tmp_path)
    files = digest(folder / "evaluation")
    evaluation = {"accuracy": 0.5, "teacher_accuracy": None, "samples": 4}
    assert record_added_evaluation(folder, POS_X, evaluation, "0" * 64, {}) == []  # another CKN
    assert record_added_evaluation(folder, POS_X, None, make_bank().manifest.ckn_fingerprint, {}) == []
    assert digest(folder / "evaluation") == files
    assert record_added_evaluation(tmp_path, POS_X, evaluation, "0" * 64, {}) == []  # no evaluation at all


# ----------------------------------------------------------------------------- train/add_task.py, Hub

def test_pull_grow_push_pull_by_the_new_revision(tmp_path: Path, hub_server, hub_repo_id: str, hf_cache: Path,
                                                 x: torch.Tensor) -> None:
    bank = make_bank()
    first = bank.push_to_hub(hub_repo_id, tag="v1")
    before = outputs(bank, x)
    old_files = {p: hub_server.read_file(hub_repo_id, p, first) for p in hub_server.list_files(hub_repo_id, first)}

    result = run(AddTaskJob, common(tmp_path / "run", f"{hub_repo_id}@v1", "--push-to-hub"))
    pushed = result.summary["pushed"]
    assert pushed["parent"] == first and pushed["pull_request"] is None
    assert hub_server.resolve(hub_repo_id, "main") == pushed["commit"]
    for path, content in old_files.items():  # every old file but the manifest and card is unchanged
        if path not in ("factors.json", "README.md"):
            assert hub_server.read_file(hub_repo_id, path, pushed["commit"]) == content, path

    grown = FactorBank.from_pretrained(hub_repo_id, revision=pushed["commit"])
    assert [t.name for t in grown.tasks] == ["shape", "scale", "orientation", "pos_x"]
    # bit-identical: the same assembly of the old tasks (another set of tasks stacks them into kernels of another
    # group count, whose summation order may differ in the last bits: exact to 1e-5, as checked just below)
    for name, logits in outputs(grown, x, list(before)).items():
        assert torch.equal(logits, before[name]), name
    assert (outputs(grown, x, ["shape", "pos_x"])["pos_x"] - grown.factor("pos_x")(x)).abs().max() <= 1e-5
    only = FactorBank.from_pretrained(hub_repo_id, tasks=["pos_x"], revision=pushed["commit"])
    assert torch.equal(outputs(only, x)["pos_x"], outputs(grown, x, ["pos_x"])["pos_x"])
    assert (outputs(only, x)["pos_x"] - outputs(grown, x)["pos_x"]).abs().max() <= 1e-5
    assert FactorBank.from_pretrained(hub_repo_id, revision="v1").manifest.tasks == list(OLD)  # v1 untouched

    # the repo moved since v1 was pulled: a push based on v1 is refused, a pull request from the head is fine
    with pytest.raises(IncompatibleFactorsError, match="changed since the bank was pulled"):
        run(AddTaskJob, common(tmp_path / "stale", f"{hub_repo_id}@v1", "--push-to-hub", task="pos_y"))
    result = run(AddTaskJob, common(tmp_path / "pr", hub_repo_id, "--create-pr", task="pos_y"))
    assert result.summary["pushed"]["pull_request"].endswith("/discussions/1")
    assert hub_server.resolve(hub_repo_id, "main") == pushed["commit"]  # main is unchanged by a PR
    from_pr = FactorBank.from_pretrained(hub_repo_id, revision="refs/pr/1")
    assert [t.name for t in from_pr.tasks][-2:] == ["pos_x", "pos_y"]


def test_a_hub_bank_grows_its_evaluation_too(tmp_path: Path, hub_server, hub_repo_id: str, hf_cache: Path) -> None:
    folder = evaluated_bank(tmp_path / "bank", tmp_path)
    bank = FactorBank.from_pretrained(folder)
    first = bank.push_to_hub(hub_repo_id, extra_files=folder / "evaluation")
    old = json.loads(hub_server.read_file(hub_repo_id, "evaluation/results.json", first))
    result = run(AddTaskJob, common(tmp_path / "run", hub_repo_id, "--push-to-hub"))
    commit = result.summary["pushed"]["commit"]
    new = json.loads(hub_server.read_file(hub_repo_id, "evaluation/results.json", commit))
    assert new.pop("added_tasks")["pos_x"]["accuracy"] == result.summary["test_evaluation"]["accuracy"]
    assert new == old
    assert "| pos_x | " in hub_server.read_file(hub_repo_id, "evaluation/results.md", commit).decode()


def test_the_app_serves_an_added_task_like_the_others(tmp_path: Path) -> None:
    from kf_model.serving import BankRegistry

    folder = make_bank().save_pretrained(tmp_path / "factors" / "grown")
    run(AddTaskJob, common(tmp_path / "run", str(folder)))
    registry = BankRegistry(tmp_path / "factors", allow_hub=False, warmup=False)
    entry = registry.get("grown")
    assert entry.task_names == ["shape", "scale", "orientation", "pos_x"]
    prediction = registry.predict(str(ROOT / "assets" / "examples" / "dsprites-test-003363.png"), "grown",
                                  ["shape", "pos_x"])
    assert list(prediction.probabilities) == ["shape", "pos_x"]
    assert len(prediction.probabilities["pos_x"]) == 32


def test_bank_locations_are_parsed_strictly(tmp_path: Path) -> None:
    from kf_model.bank.growing import BankLocation
    from kf_model.errors import BankNotFoundError

    assert BankLocation.parse(str(tmp_path)).folder == tmp_path
    location = BankLocation.parse("org/repo@v1")
    assert (location.repo_id, location.revision, str(location)) == ("org/repo", "v1", "org/repo@v1")
    for bad in ("org/repo@", "@v1", "org/repo@a@b"):
        with pytest.raises(BankNotFoundError, match="neither a folder nor"):
            BankLocation.parse(bad)
    with pytest.raises(BankNotFoundError, match="not a valid Hub repo id"):
        BankLocation.parse("no/such/folder").load()
    (tmp_path / "afile").write_text("x")
    for path, message in ((tmp_path / "missing", "no such folder"), (tmp_path / "afile", "not a folder"),
                          ("./missing", "no such folder")):  # a path is never read as a repo id
        with pytest.raises(BankNotFoundError, match=message):
            BankLocation.parse(str(path))
