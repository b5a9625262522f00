"""The README's Results section against the JSON it comes from: the bundled banks' evaluations
(``assets/factors/<dataset>/evaluation/results.json``) and the own-model run (``docs/own-model/results.json``).
Every table row and every figure of the prose is rendered here from the JSON and looked up verbatim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def evaluation(dataset: str) -> dict:
    return json.loads((ROOT / "assets" / "factors" / dataset / "evaluation" / "results.json").read_text())


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def signed(points: float) -> str:
    return f"{points:+.2f}".replace("-", "−")


def check(results: dict, target: str) -> dict:
    return next(c for c in results["targets"]["checks"] if c["id"] == target)


def test_dsprites_table_is_the_bundled_evaluation() -> None:
    results = evaluation("dsprites")
    acc, labels = results["accuracy"], {t["name"]: len(t["labels"]) for t in results["dataset"]["tasks"]}
    for task, classes in labels.items():
        teacher, kd, factor = acc["teacher"][task], acc["kd_student"][task], acc["factor"][task]
        row = (f"| {task} ({classes}) | {pct(teacher)} | {pct(kd)} | {pct(factor)} | "
               f"{signed(100 * (factor - teacher))} |")
        assert row in README, row
    mean = acc["mean"]
    row = (f"| **mean** | {pct(mean['teacher'])} | {pct(mean['kd_student'])} | **{pct(mean['factor'])}** | "
           f"{signed(100 * (mean['factor'] - mean['teacher']))} |")
    assert row in README, row
    passed = results["targets"]["num_passed"], results["targets"]["num_checked"]
    assert f"(5 tasks, 10,000 test images): all {passed[1]} targets met" in README and passed[0] == passed[1]


def test_fashion_mnist_targets_are_the_bundled_evaluation() -> None:
    results = evaluation("fashion-mnist")
    ovr = results["one_vs_rest"]
    worst = check(results, "factor_within_0.5pt_of_teacher_ovr")
    worst_task = min(worst["details"], key=worst["details"].get)
    rows = [f"| teacher, 10-way accuracy | {pct(ovr['teacher_kway_accuracy'])} % | ≥ 90 % ✅ |",
            f"| mean binary factor accuracy | {pct(results['accuracy']['mean']['factor'])} % | ≥ 97 % ✅ |",
            f"| worst binary factor vs the teacher's own one-vs-rest accuracy | "
            f"{signed(worst['value'])} ({worst_task}) | ≥ −0.5 ❌ |",
            f"| argmax over the assembled 10 factors' P(class), 10-way | "
            f"{pct(ovr['assembled_argmax_kway_accuracy'])} % | ≥ teacher − 1.0 = "
            f"{pct(check(results, 'assembled_argmax_within_1pt_of_teacher')['threshold'])} % ✅ |"]
    for row in rows:
        assert row in README, row
    passed = results["targets"]["num_passed"], results["targets"]["num_checked"]
    assert f"(10 one-vs-rest tasks, 10,000 test images): {passed[0]} of {passed[1]} targets met" in README


@pytest.mark.parametrize("dataset, label", [("dsprites", "dSprites"), ("fashion-mnist", "Fashion-MNIST")])
def test_leakage_figures_are_the_bundled_evaluation(dataset: str, label: str) -> None:
    summary = evaluation(dataset)["leakage"]["summary"]
    tsn, teacher = 100 * summary["tsn_off_diagonal_excess"], 100 * summary["teacher_excess"]
    assert f"{label} {tsn:.1f} points from TSN features vs {teacher:.1f}" in README or \
        f"{label} {tsn:.1f} vs {teacher:.1f}" in README, (label, tsn, teacher)
    diagonal = 100 * summary["tsn_diagonal_accuracy"]  # the TSN's own task, against the factor's accuracy
    factor = 100 * evaluation(dataset)["accuracy"]["mean"]["factor"]
    assert f"{diagonal:.1f} %" in README and f"{factor:.1f} %" in README, (diagonal, factor)


def test_fashion_mnist_prose_and_proxy_disentanglement_are_the_bundled_evaluation() -> None:
    results = evaluation("fashion-mnist")
    ovr, acc = results["one_vs_rest"], results["accuracy"]
    details = check(results, "factor_within_0.5pt_of_teacher_ovr")["details"]
    worst = min(details, key=details.get)
    others = max(abs(v) for k, v in details.items() if k != worst)
    prose = " ".join(README.split())
    assert (f"({pct(acc['factor'][worst])} % vs the teacher's {pct(ovr['teacher_ovr_from_kway'][worst])} %; the "
            f"other nine factors are within {others:.2f})") in prose
    assert f"reaches {pct(ovr['kd_student_kway_accuracy'])} % 10-way" in prose
    dsprites = evaluation("dsprites")["disentanglement"]
    fashion = results["disentanglement"]
    assert (f"DCI disentanglement dSprites {dsprites['tsn']['dci_disentanglement']:.2f} vs "
            f"{dsprites['teacher']['dci_disentanglement']:.2f}, Fashion-MNIST "
            f"{fashion['tsn']['dci_disentanglement']:.2f} vs {fashion['teacher']['dci_disentanglement']:.2f}") in prose


def test_storage_figures_are_the_bundled_evaluation() -> None:
    p = evaluation("fashion-mnist")["parameters"]
    assert len(set(p["tsn_params"])) == 1
    text = (f"any subset of the {p['num_tasks']} Fashion-MNIST tasks is served by {p['bank_params']:,} parameters "
            f"(CKN {p['ckn_params']:,} + {p['num_tasks']} ×\n{p['tsn_params'][0]:,}), against 2^n · S = "
            f"{p['subset_students_params_paper']:,} for one distilled student per subset; the teacher has "
            f"{p['teacher_params']:,}.")
    assert " ".join(text.split()) in " ".join(README.split()), text


def test_own_model_table_and_prose_are_its_json() -> None:
    results = json.loads((ROOT / "docs" / "own-model" / "results.json").read_text())
    acc, ovr = results["accuracy"], results["one_vs_rest"]
    factor_check = check(results, "factor_within_0.5pt_of_teacher_ovr")
    kway_check = check(results, "assembled_argmax_within_1pt_of_teacher")
    worst = max(abs(v) for v in factor_check["details"].values())
    kway_gap = 100 * (ovr["teacher_kway_accuracy"] - ovr["assembled_argmax_kway_accuracy"])
    prose = " ".join(README.split())
    assert (f"Every factor is within {worst:.2f} point of the teacher's own one-vs-rest accuracy (target: "
            f"{-factor_check['threshold']:g} point)") in prose
    kway_target = 100 * (ovr["teacher_kway_accuracy"] - kway_check["threshold"])
    assert (f"argmax over the assembled factors within {kway_gap:.2f} point of the teacher's 10-way accuracy "
            f"(target: {kway_target:.0f} point)") in prose
    for task in sorted(acc["factor"]):
        teacher, factor = acc["teacher"][task], acc["factor"][task]
        row = f"| {task} | {pct(teacher)} | {pct(factor)} | {100 * (factor - teacher):+.2f} |"
        assert row in README, row
    row = (f"| **10-way accuracy** | {pct(ovr['teacher_kway_accuracy'])} | "
           f"{pct(ovr['assembled_argmax_kway_accuracy'])} (argmax over the assembled factors) | "
           f"{-kway_gap:+.2f} |")
    assert row in README, row


def test_experiment_cost_prose_is_the_probe_and_the_bundled_recipe() -> None:
    probe = json.loads((ROOT / "docs" / "experiments" / "cost-probe-full.json").read_text())
    rows = probe["projected_minutes"].values()
    total = sum(r["train"] + r["transfer"] for r in rows)
    transfer_runs, transfer = sum(r["transfer_runs"] for r in rows), sum(r["transfer"] for r in rows)
    manifest = json.loads((ROOT / "assets" / "factors" / "dsprites" / "factors.json").read_text())["training"]
    idle = manifest["wall_time_s"] / manifest["steps"]
    probed = probe["seconds_per_step"]["dsprites"]["stages"]["factorize"]
    prose = " ".join(README.split())
    assert f"{total / 60:.1f} hours of training and transfer, of which the {transfer_runs} transfer runs are " \
           f"{transfer:,.0f} minutes" in prose
    assert f"about {probed / idle:.1f} times faster" in prose
    assert f"took {manifest['wall_time_s']} s for its {manifest['steps']:,} steps" in prose
    assert f"{idle:.2f} s per step against {probed:.2f} s in the probe" in prose
    assert f"about {total / 60 / (probed / idle):.1f} hours of an idle 2-core machine" in prose


def test_experiment_reading_quotes_the_full_scale_json() -> None:
    path = ROOT / "docs" / "experiments" / "disentanglement-dsprites-full.json"
    teacher = json.loads(path.read_text())["stages"]["teacher-all"]["per_task"]
    solved = min(teacher[t] for t in ("shape", "scale", "pos_x", "pos_y"))
    prose = " ".join(README.split())
    assert f"(at least {solved:.2f} %; orientation {teacher['orientation']:.2f} %," in prose and solved >= 95


def test_the_claims_reading_is_what_report_writes_from_the_json() -> None:
    """The README's reading of claims b and c is the text `report --readme` writes from docs/experiments, and its
    key figures are the JSON's."""
    from kf_model.experiments.reading import READING_END, READING_START, claims_reading

    folder = ROOT / "docs" / "experiments"
    block = README.split(READING_START, 1)[1].split("\n", 1)[1].split(READING_END, 1)[0]
    assert " ".join(block.split()) == " ".join(claims_reading(folder).split())
    reps = json.loads((folder / "disentanglement-dsprites-full.json").read_text())["representations"]
    prose = " ".join(block.split())
    assert f"DCI disentanglement ({reps['tsn_concat']['dci_disentanglement']['mean']:.3f}) than the teacher's code " \
           f"({reps['teacher']['dci_disentanglement']['mean']:.3f})" in prose
    leak = reps["tsn_concat"]["leakage"]
    assert f"leaks less ({100 * leak['leakage_excess']['mean']:.1f} points over chance" in prose
    transfer = json.loads((folder / "transfer-fashion-mnist-full.json").read_text())["tasks"]
    cell = transfer["sneaker"]["fractions"]["0.01"]
    assert f"sneaker from 1 % of the labels ({cell['labels']:,} images): new TSN {100 * cell['kf_tsn']['mean']:.1f} %" \
           in prose


def test_every_image_the_readme_shows_is_committed() -> None:
    """A figure the README embeds is a file of the repository (drawn by a recorded command), not a broken link."""
    import re

    shown = [link for link in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README) if "://" not in link]
    assert "docs/experiments/transfer-full.png" in shown
    missing = [link for link in shown if not (ROOT / link).is_file()]
    assert not missing, missing
