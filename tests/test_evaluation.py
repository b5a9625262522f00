"""kf_model.evaluation / plots / train/evaluate.py on tiny untrained networks and synthetic datasets."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import Dataset

from kf_model import FactorBank
from kf_model.bank import save_module
from kf_model.data.specs import InputSpec, TaskSpec
from kf_model.errors import IncompatibleFactorsError, UnknownTaskError
from kf_model.evaluation import (
    IndexedDataset,
    collect_outputs,
    evaluate,
    update_bank,
    write_report,
)
from kf_model.metrics import one_vs_rest_accuracy_from_multiclass
from kf_model.models import CommonKnowledgeNetwork, EncoderConfig, TaskSpecificNetwork, Teacher

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
SPEC = InputSpec(channels=1, size=SIZE, mean=(0.5,), std=(0.25,))
MULTI_TASKS = [TaskSpec("shape", ("square", "ellipse", "heart"), "Which shape"),
               TaskSpec("scale", tuple(str(i) for i in range(4)), "How big"),
               TaskSpec("pos_x", ("left", "right"), "Where")]
CLASSES = ["t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
OVR_TASKS = [TaskSpec(c, ("no", "yes"), f"Is it a {c}?") for c in CLASSES]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ToyDataset(Dataset):
    """The data contract (``.tasks``, ``.input_spec``, ``(image [C,H,W] in [0,1], targets int64 [T])``), random."""

    def __init__(self, n: int, tasks: list[TaskSpec], one_vs_rest: bool = False, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.tasks, self.input_spec = tasks, SPEC
        self.images = torch.rand(n, 1, SIZE, SIZE, generator=gen)
        if one_vs_rest:
            self.class_indices = torch.randint(0, len(tasks), (n,), generator=gen)
            self.targets = nn.functional.one_hot(self.class_indices, len(tasks))
        else:
            self.targets = torch.stack([torch.randint(0, t.num_classes, (n,), generator=gen) for t in tasks], 1)
        self.images += 0.3 * self.targets[:, :1, None, None].float()  # something for the probes to find

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].clamp(0, 1), self.targets[i]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run several times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def backbone(width: int) -> dict:
    return dict(arch="cnn", in_channels=1, width=width, num_stages=3, mean=[0.5], std=[0.25])


def make_models(tasks: list[TaskSpec], one_vs_rest: bool = False, bank_tasks: list[TaskSpec] | None = None,
                seed: int = 0) -> tuple[Teacher, Teacher, FactorBank]:
    torch.manual_seed(seed)
    specs = [t.to_dict() for t in tasks]
    teacher = Teacher(backbone(8), specs, one_vs_rest=one_vs_rest).eval()
    student = Teacher(backbone(4), specs, one_vs_rest=one_vs_rest).eval()
    ckn = CommonKnowledgeNetwork(backbone(4))
    encoder = asdict(EncoderConfig(widths=[4, 4, 8], mean=[0.5], std=[0.25]))
    tsns = [TaskSpecificNetwork(t.to_dict(), encoder, ckn.width) for t in (bank_tasks or tasks)]
    for module in (teacher, student, ckn, *tsns):  # untrained BN would be the identity: make it do something
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
    bank = FactorBank.from_modules(ckn, tsns, input_spec=SPEC, dataset="toy",
                                   teacher={"description": "toy teacher"})
    return teacher, student, bank


def run(teacher, student, bank, dataset, **kwargs) -> dict:
    kwargs = {"batch_size": 16, "probe_samples": None, "show_progress": False, **kwargs}
    return evaluate(teacher, student, bank, dataset, accelerator=Accelerator(cpu=True), **kwargs)


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def task_predictions(model: Teacher, images: torch.Tensor, names: list[str]) -> torch.Tensor:
    with torch.no_grad():
        out = model(images)
    return torch.stack([out.logits[n].argmax(-1) for n in names], 1)


@pytest.fixture(scope="module")
def multi() -> tuple[Teacher, Teacher, FactorBank, ToyDataset, dict]:
    teacher, student, bank = make_models(MULTI_TASKS)
    dataset = ToyDataset(40, MULTI_TASKS)
    return teacher, student, bank, dataset, run(teacher, student, bank, dataset, dataset_name="toy", split="test")


# ------------------------------------------------------------------ results and report


def test_evaluate_writes_json_markdown_and_plots(multi, tmp_path: Path) -> None:
    teacher, _, _, dataset, results = multi
    paths = write_report(results, tmp_path / "report")
    data = strict_json(paths["json"])
    assert {"dataset", "samples", "accuracy", "exactness", "disentanglement", "leakage", "parameters", "targets",
            "timing", "one_vs_rest"} <= set(data)
    names = [t.name for t in MULTI_TASKS]
    # the teacher's accuracy is what the teacher really scores on the whole dataset
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    truth = (task_predictions(teacher, images, names) == dataset.targets).double().mean(0)
    assert data["accuracy"]["teacher"] == pytest.approx(dict(zip(names, truth.tolist())))
    assert set(data["accuracy"]) == {"teacher", "kd_student", "factor", "assembled", "mean"}
    assert data["accuracy"]["factor"] == data["accuracy"]["assembled"]
    # leakage: T x T for the TSNs, one row for the teacher, chance per task
    leak = data["leakage"]
    assert len(leak["tsn"]["accuracy"]) == 3 and all(len(r) == 3 for r in leak["tsn"]["accuracy"])
    assert len(leak["teacher"]["accuracy"]) == 1 and len(leak["tsn"]["chance"]) == 3
    assert leak["summary"]["tsn_off_diagonal_excess"] is not None
    for source in ("tsn", "teacher", "kd_student"):
        assert set(data["disentanglement"][source]) == {"dci_disentanglement", "dci_completeness",
                                                         "dci_informativeness", "mig", "sap"}
    params = data["parameters"]
    assert params["bank_params"] == params["ckn_params"] + sum(params["tsn_params"])
    assert params["subset_students_params_paper"] == 2**3 * params["ckn_params"]
    targets = data["targets"]
    assert targets["suite"] == "multi-task"
    assert [c["id"] for c in targets["checks"]] == ["factor_within_1pt_of_teacher", "mean_factor_ge_kd",
                                                    "leakage_below_teacher"]
    assert all(isinstance(c["passed"], bool) for c in targets["checks"])
    assert targets["all_passed"] == all(c["passed"] for c in targets["checks"])

    markdown = paths["markdown"].read_text()
    for heading in ("## Per-task accuracy", "## Targets", "## Disentanglement", "## Leakage", "## Parameter"):
        assert heading in markdown
    for name in names:
        assert f"| {name} | {100 * data['accuracy']['teacher'][name]:.2f} |" in markdown
        assert f"| TSN {name} |" in markdown
    assert ("PASS" in markdown) == any(c["passed"] for c in targets["checks"])
    for name in ("accuracy", "leakage", "parameters", "disentanglement"):
        png = paths[name]
        assert png == tmp_path / "report" / f"{name}.png" and png.read_bytes()[:8] == PNG_MAGIC
        assert png.stat().st_size > 5000


def test_assembly_exactness_is_reported_and_a_broken_assembly_is_caught(multi, monkeypatch) -> None:
    teacher, student, bank, dataset, results = multi
    exactness = results["exactness"]
    assert exactness["exact"] is True and exactness["max_abs_diff_overall"] < 1e-5
    assert set(exactness["max_abs_diff"]) == {t.name for t in MULTI_TASKS}

    class Shifted(nn.Module):  # an "assembly" whose scale logits drift by 0.25: the evaluation must see it
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = dict(self.net(x))
            logits["scale"] = logits["scale"] + 0.25
            return logits

    assemble = bank.assemble
    monkeypatch.setattr(bank, "assemble", lambda tasks=None: Shifted(assemble(tasks)))
    broken = run(teacher, student, bank, dataset)
    assert broken["exactness"]["max_abs_diff"]["scale"] == pytest.approx(0.25, abs=1e-5)
    assert broken["exactness"]["max_abs_diff"]["shape"] < 1e-5
    assert broken["exactness"]["exact"] is False


def test_each_sample_is_counted_exactly_once() -> None:
    teacher, student, bank = make_models(MULTI_TASKS)
    dataset = ToyDataset(37, MULTI_TASKS, seed=3)  # 37 = 4 * 8 + 5: an uneven last batch
    collected = collect_outputs(teacher, student, bank, dataset, accelerator=Accelerator(cpu=True), batch_size=8,
                                probe_samples=20, show_progress=False)
    assert torch.equal(collected.index, torch.arange(37))
    assert torch.equal(collected.targets, dataset.targets)
    assert all(p.shape == (37, 3) for p in collected.predictions.values())
    assert collected.probe_index.numel() == 20 and collected.probe_index.unique().numel() == 20
    assert torch.equal(collected.probe_targets, dataset.targets[collected.probe_index])
    assert collected.features["tsn"].shape == (20, 3, 8) and collected.features["teacher"].shape == (20, 32)
    results = run(teacher, student, bank, dataset, batch_size=8)
    assert results["samples"] == {"evaluated": 37, "unique": 37, "dataset_length": 37, "num_processes": 1,
                                  "each_counted_once": True}


def test_tsn_features_are_the_stacked_pooled_features(multi) -> None:
    _, _, bank, dataset, _ = multi
    teacher, student, _ = make_models(MULTI_TASKS)
    collected = collect_outputs(teacher, student, bank, dataset, accelerator=Accelerator(cpu=True), batch_size=16,
                                probe_samples=None, show_progress=False)
    with torch.no_grad():
        stacked = bank.assemble().tsns.pooled_features(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert torch.allclose(collected.features["tsn"], stacked, atol=1e-5)


def test_indexed_dataset_keeps_indices_and_batched_getitems() -> None:
    class Batched(ToyDataset):
        calls = 0

        def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            Batched.calls += 1
            return [self[i] for i in items]

    data = IndexedDataset(Batched(5, MULTI_TASKS))
    assert [i for i, _, _ in data.__getitems__([4, 1])] == [4, 1] and Batched.calls == 1
    index, image, targets = data[2]
    assert index == 2 and image.shape == (1, SIZE, SIZE) and targets.shape == (3,)


def test_tasks_the_teacher_lacks_are_refused() -> None:
    teacher, student, _ = make_models(MULTI_TASKS[:2])
    _, _, bank = make_models(MULTI_TASKS)
    with pytest.raises(UnknownTaskError, match="pos_x"):
        run(teacher, student, bank, ToyDataset(8, MULTI_TASKS))


# ------------------------------------------------------------------ one-vs-rest (Fashion-MNIST style)


def test_one_vs_rest_teacher_path() -> None:
    teacher, student, bank = make_models(OVR_TASKS, one_vs_rest=True)
    dataset = ToyDataset(30, OVR_TASKS, one_vs_rest=True)
    results = run(teacher, student, bank, dataset, probe_samples=24)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    true = dataset.class_indices
    with torch.no_grad():
        teacher_pred = teacher(images).class_logits.argmax(-1)
        student_pred = student(images).class_logits.argmax(-1)
        assembled = bank.assemble()(images)
    positive = torch.stack([assembled[c].softmax(-1)[:, 1] for c in CLASSES], 1)

    ovr = results["one_vs_rest"]
    assert ovr["num_classes"] == 10 and ovr["invalid_rows"] == 0
    assert ovr["teacher_kway_accuracy"] == pytest.approx((teacher_pred == true).double().mean().item())
    assert ovr["kd_student_kway_accuracy"] == pytest.approx((student_pred == true).double().mean().item())
    assert ovr["assembled_argmax_kway_accuracy"] == pytest.approx(
        (positive.argmax(-1) == true).double().mean().item())
    # the teacher is scored on task i by "K-way argmax == i", the reference of the binary targets
    reference = dict(zip(CLASSES, one_vs_rest_accuracy_from_multiclass(teacher_pred, true, 10)))
    assert results["accuracy"]["teacher"] == pytest.approx(reference)
    assert ovr["teacher_ovr_from_kway"] == pytest.approx(reference)
    binary = task_predictions(teacher, images, CLASSES)
    assert ovr["teacher_binary_logits"] == pytest.approx(
        dict(zip(CLASSES, (binary == dataset.targets).double().mean(0).tolist())))
    assert len(results["leakage"]["tsn"]["accuracy"]) == 10
    targets = results["targets"]
    assert targets["suite"] == "one-vs-rest"
    checks = {c["id"]: c for c in targets["checks"]}
    assert set(checks) == {"teacher_kway_ge_90", "factor_within_0.5pt_of_teacher_ovr", "mean_binary_factor_ge_97",
                           "assembled_argmax_within_1pt_of_teacher", "leakage_below_teacher"}
    assert checks["teacher_kway_ge_90"]["passed"] is (ovr["teacher_kway_accuracy"] >= 0.9)
    assert checks["mean_binary_factor_ge_97"]["value"] == pytest.approx(results["accuracy"]["mean"]["factor"])


def test_one_vs_rest_with_a_subset_of_factors_skips_the_kway_assembly() -> None:
    teacher, student, bank = make_models(OVR_TASKS, one_vs_rest=True, bank_tasks=OVR_TASKS[:3])
    results = run(teacher, student, bank, ToyDataset(24, OVR_TASKS, one_vs_rest=True))
    assert list(results["accuracy"]["factor"]) == CLASSES[:3]
    assert results["one_vs_rest"]["assembled_argmax_kway_accuracy"] is None
    assert results["one_vs_rest"]["teacher_kway_accuracy"] is not None
    checks = {c["id"]: c for c in results["targets"]["checks"]}
    assert checks["assembled_argmax_within_1pt_of_teacher"]["passed"] is None


# ------------------------------------------------------------------ bank update and the CLI


def test_update_bank_records_metrics_rerenders_card_and_copies_report(multi, tmp_path: Path) -> None:
    _, _, bank, _, results = multi
    bank_dir = bank.save_pretrained(tmp_path / "bank", repo_id="kf-org/toy-factors")
    report = write_report(results, tmp_path / "report")
    update_bank(bank_dir, results, tmp_path / "report")

    manifest = json.loads((bank_dir / "factors.json").read_text())
    metrics = manifest["metrics"]
    for task in MULTI_TASKS:
        assert metrics["tasks"][task.name] == {
            "accuracy": results["accuracy"]["factor"][task.name],
            "teacher_accuracy": results["accuracy"]["teacher"][task.name],
            "kd_accuracy": results["accuracy"]["kd_student"][task.name]}
    summary = metrics["summary"]
    assert summary["mean_factor_accuracy"] == results["accuracy"]["mean"]["factor"]
    assert summary["targets_passed"] == f"{results['targets']['num_passed']}/{results['targets']['num_checked']}"
    assert manifest["ckn_fingerprint"] == bank.manifest.ckn_fingerprint

    card = (bank_dir / "README.md").read_text()
    assert "No evaluation recorded yet" not in card
    assert "| task | accuracy | kd_accuracy | teacher_accuracy |" in card
    assert f"| mean_factor_accuracy | {summary['mean_factor_accuracy']:.4f} |" in card
    assert 'from_pretrained("kf-org/toy-factors"' in card  # the card keeps its repo id
    copied = sorted(p.name for p in (bank_dir / "evaluation").iterdir())
    assert copied == sorted(p.name for p in report.values())
    assert FactorBank.from_pretrained(bank_dir).manifest.metrics == metrics  # still a valid, loadable bank

    _, _, other = make_models(MULTI_TASKS, seed=1)
    other_dir = other.save_pretrained(tmp_path / "other")
    with pytest.raises(IncompatibleFactorsError, match="refusing"):
        update_bank(other_dir, results)
    assert json.loads((other_dir / "factors.json").read_text())["metrics"] == {}


def test_cli_evaluates_dsprites_and_updates_the_bank(tmp_path: Path) -> None:
    from kf_model.data import DSPRITES_INPUT_SPEC, DSPRITES_TASKS

    torch.manual_seed(0)
    specs = [t.to_dict() for t in DSPRITES_TASKS[:2]]
    norm = dict(mean=list(DSPRITES_INPUT_SPEC.mean), std=list(DSPRITES_INPUT_SPEC.std))
    net = dict(arch="cnn", in_channels=1, width=4, num_stages=3, stem_stride=2, **norm)
    save_module(Teacher(net, specs), tmp_path / "teacher")
    save_module(Teacher(dict(net, width=2), specs), tmp_path / "student")
    ckn = CommonKnowledgeNetwork(net)
    encoder = asdict(EncoderConfig(widths=[4, 4, 4], **norm))
    tsns = [TaskSpecificNetwork(t, encoder, ckn.width) for t in specs]
    FactorBank.from_modules(ckn, tsns, input_spec=DSPRITES_INPUT_SPEC, dataset="dsprites").save_pretrained(
        tmp_path / "bank")

    command = [sys.executable, str(ROOT / "train" / "evaluate.py"), "--teacher", str(tmp_path / "teacher"),
               "--student", str(tmp_path / "student"), "--bank", str(tmp_path / "bank"), "--dataset", "dsprites",
               "--limit", "40", "--batch-size", "16", "--probe-samples", "40", "--cpu",
               "--output-dir", str(tmp_path / "report"), "--update-bank"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "targets:" in done.stdout and "## Per-task accuracy" in done.stdout
    results = strict_json(tmp_path / "report" / "results.json")
    assert results["dataset"]["name"] == "dsprites" and results["dataset"]["split"] == "test"
    assert results["samples"]["evaluated"] == 40 and results["samples"]["each_counted_once"]
    assert list(results["accuracy"]["factor"]) == ["shape", "scale"]
    manifest = json.loads((tmp_path / "bank" / "factors.json").read_text())
    assert set(manifest["metrics"]["tasks"]) == {"shape", "scale"}
    assert (tmp_path / "bank" / "evaluation" / "leakage.png").is_file()
    assert manifest["familiarity"]["reference_samples"] == 40  # and the familiarity statistics, on as many images
    assert (tmp_path / "bank" / "familiarity" / "model.safetensors").is_file()



def test_cli_refuses_a_missing_bank_with_a_message(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("kf_evaluate_script", ROOT / "train" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    teacher, _, _ = make_models(MULTI_TASKS)
    save_module(teacher, tmp_path / "teacher")
    argv = ["--teacher", str(tmp_path / "teacher"), "--bank", str(tmp_path / "nowhere"), "--dataset", "dsprites",
            "--cpu"]
    assert script.main(argv) == 2
    assert "nowhere" in capsys.readouterr().err
    assert script.main([*argv, "--update-bank"]) == 2
    assert "--update-bank needs a local bank folder" in capsys.readouterr().err
