"""kf_model.experiments end to end at a toy scale (a few steps), and the README tables against their JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from kf_model.bank import FactorBank, load_module
from kf_model.errors import KFError
from kf_model.experiments import reports as R
from kf_model.experiments import representations as RE
from kf_model.experiments import stages as ST
from kf_model.experiments import transfer as T
from kf_model.experiments.disentanglement import Budget
from kf_model.models import Teacher
from kf_model.training import add_task as A

ROOT = Path(__file__).resolve().parents[1]
TOY = ST.Scale("toy", train_limit=64, test_limit=32, teacher_width=4, ckn_width=4, num_stages=3, tsn_widths=(4, 4),
              tsn_strides=(4, 4), stage_steps=3, transfer_steps=2, transfer_lr=1e-2, batch_size=16, seeds=(0, 1),
              budget=Budget(num_train=60, num_test=30, intervention_train=6, intervention_eval=6, batch_size=8,
                            gbt_estimators=2))


@pytest.fixture(scope="module")
def dsprites_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("transfer")
    return work, T.transfer(ST.SETTINGS["dsprites"], TOY, work, log=lambda _: None)


@pytest.mark.parametrize("dataset", ["dsprites", "fashion-mnist"])
def test_transfer_runs_every_method_and_writes_a_table(dataset: str, tmp_path: Path, dsprites_run) -> None:
    setting = ST.SETTINGS[dataset]
    work, results = dsprites_run if dataset == "dsprites" else (tmp_path, None)
    results = results or T.transfer(setting, TOY, work, log=lambda _: None)
    base = FactorBank.from_pretrained(work / "bank-base")
    assert [t.name for t in base.tasks] == list(setting.base_tasks)  # the base factorization never saw them
    assert list(results["tasks"]) == list(setting.held_out)
    row = results["tasks"][setting.held_out[0]]["fractions"]["0.01"]
    assert row["labels"] == 2
    for method in T.METHODS:
        assert len(row[method]["accuracies"]) == 2 and 0.0 <= row[method]["mean"] <= 1.0
    results["command"] = "python train/experiments.py transfer --toy"
    table = R.transfer_table(results)
    assert table.count("\n| ") == 3 * len(setting.held_out)  # one row per (task, fraction) after the header


def test_frozen_trunks_do_not_move_and_scratch_does(dsprites_run) -> None:
    work, _ = dsprites_run
    bank = FactorBank.from_pretrained(work / "bank-base")
    teacher = load_module(Teacher, work / "teacher-base", "teacher")
    spec = bank.available_tasks[0]
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 64, 64), torch.randint(0, 3, (8,)))
    for method in T.METHODS:
        model, loss = T.transfer_model(method, spec, bank, teacher)
        trunk = {k: v.clone() for k, v in model.trunk.state_dict().items()}
        A.fit_new_factor(model, spec, data, steps=2, batch_size=4, objective=loss)
        same = all(torch.equal(v, model.trunk.state_dict()[k]) for k, v in trunk.items())
        assert same == (method != "scratch"), method


def test_disentanglement_table_scores_every_representation(dsprites_run) -> None:
    work, _ = dsprites_run  # reuses its teacher-all and bank-all, trains the KD student and the 10-d bank
    results = RE.disentanglement(TOY, work, log=lambda _: None)
    assert list(results["representations"]) == ["teacher", "kd_student", "ckn", "tsn_concat", "tsn_latent_10d"]
    assert results["representations"]["tsn_latent_10d"]["code_dims"] == 10
    for scores in results["representations"].values():
        assert all(key in scores for key in R.METRIC_LABELS)


def test_sweep_scores_every_point_on_the_validation_carve_out(tmp_path: Path) -> None:
    from kf_model.data.dsprites import split_indices
    from kf_model.experiments import sweep as S
    from kf_model.training import DataConfig, DataSourceConfig, load_training_data

    grid = S.Grid(widths=(2,), betas=(1e-3,), infomins=("batch", "vib"))
    results = S.sweep(TOY, grid, tmp_path, budget=TOY.budget, val_size=2000, log=lambda _: None)
    assert list(results["points"]) == ["w2-beta0.001-batch", "w2-beta0.001-vib"]
    for name, row in results["points"].items():
        bank = FactorBank.from_pretrained(tmp_path / name)
        assert row["pooled"]["code_dims"] == 2 * 5 and row["z"]["code_dims"] == 5 * bank.ckn.width
        assert list(row["accuracy"]) == ["shape", "scale", "orientation", "pos_x", "pos_y"]
        assert 0.0 <= row["mean_accuracy"] <= 1.0 and row["validation_images"] == TOY.test_limit
        assert all(key in row[r] for r in S.REPRESENTATIONS for key in S.SWEEP_METRICS)
        objective = bank.manifest.training["objective"]
        assert (objective["beta"], objective["infomin"]) == (1e-3, row["infomin"])
    assert FactorBank.from_pretrained(tmp_path / "w2-beta0.001-vib").tsns["shape"].variational

    cells = S.validation_cells(TOY, 2000)  # never trained on, never the test split
    data = DataConfig(DataSourceConfig("dsprites"), val_size=2000, limit=TOY.train_limit, data_seed=0)
    pool = load_training_data(data)[0].grid_indices
    assert len(cells) == 2000 and not set(cells.tolist()) & (set(pool.tolist()) | set(split_indices("test").tolist()))
    results["command"] = "python train/experiments.py sweep --toy"
    assert results["teacher"]["features"]["code_dims"] == 16 and 0.0 <= results["teacher"]["mean_accuracy"] <= 1.0
    assert S.sweep_table(results).count("\n| ") == 3  # the teacher (reference) and the 2 points
    with pytest.raises(KFError, match="--betas"):
        S.check_grid([2], [-1.0], ["batch"])


def test_readme_tables_are_the_recorded_json() -> None:
    """Every table the report renders from docs/experiments/*.json appears verbatim in the README."""
    folder = ROOT / "docs" / "experiments"
    if not any(folder.glob("*.json")):
        pytest.skip("no recorded experiment results")
    readme = (ROOT / "README.md").read_text()
    for part in R.report_tables(folder):
        assert part in readme, part.splitlines()[0]
    assert re.search(r"docs/experiments/transfer\.png", readme)
    for path in folder.glob("*.json"):
        scale = json.loads(path.read_text())["scale"]
        assert (scale if isinstance(scale, str) else scale["name"]) in ("quick", "full")


def test_readme_sweep_reading_quotes_the_recorded_json() -> None:
    """The figures the sweep's reading paragraph quotes (ranges over the points) are those of its JSON."""
    path = ROOT / "docs" / "experiments" / "sweep-dsprites-quick.json"
    if not path.is_file():
        pytest.skip("no recorded sweep")
    results = json.loads(path.read_text())
    readme = (ROOT / "README.md").read_text()
    assert "docs/experiments/sweep-dsprites-quick.png" in readme
    points, teacher = list(results["points"].values()), results["teacher"]["features"]
    cells = [row[r] for row in points for r in results["representations"]]

    def span(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * min(values):.{digits}f}–{scale * max(values):.{digits}f}"

    accuracy = [row["mean_accuracy"] for row in points]
    assert f"mean validation accuracy {span(accuracy, 100, 1)} %" in readme
    assert f"teacher {teacher['dci_disentanglement']:.3f}" in readme
    assert f"modularity ({teacher['modularity']:.3f} against\n{span([c['modularity'] for c in cells])})" in readme
    assert max(c[m] for c in cells for m in ("mig", "sap")) <= 0.04 and "MIG and SAP stay ≤ 0.04" in readme
    assert max(c["dci_informativeness_test"] for c in cells) <= 0.40 and "informativeness ≤ 0.40" in readme
    by_name = results["points"]
    for width in results["grid"]["widths"]:
        same = [by_name[f"w{width}-beta{b:g}-{v}"] for b in (0.0, 1e-3) for v in results["grid"]["infomins"]]
        assert max(abs(a["mean_accuracy"] - b["mean_accuracy"]) for a, b in zip(same[:2], same[2:])) <= 0.001


def test_the_full_scale_block_of_the_readme_is_rewritten_between_its_markers() -> None:
    readme = f"intro\n{R.FULL_SCALE_START} cmd -->\n\nold table\n\n{R.FULL_SCALE_END}\n\nrest\n"
    new = R.with_full_scale_tables(readme, ["| a |", "| b |"])
    assert new == f"intro\n{R.FULL_SCALE_START} cmd -->\n\n| a |\n\n| b |\n\n{R.FULL_SCALE_END}\n\nrest\n"
    assert R.with_full_scale_tables(new, ["| a |", "| b |"]) == new
    with pytest.raises(KFError, match="block"):
        R.with_full_scale_tables("no markers", [])


def test_transfer_steps_are_twenty_passes_over_the_labels_between_300_and_the_scale_s_cap() -> None:
    full = ST.Scale.full()  # batch 128, cap 2,000 steps
    assert ST.transfer_steps(full, 550) == 300  # 5 batches a pass: 100 steps, raised to the floor
    assert ST.transfer_steps(full, 5_500) == 20 * 43
    assert ST.transfer_steps(full, 55_000) == 2_000
    assert ST.transfer_steps(ST.Scale.quick(), 3_000) == 300  # the quick scale's cap: unchanged
    assert ST.transfer_steps(full, 2) == 300


def test_own_and_matched_shares_of_an_importance_matrix() -> None:
    from kf_model.experiments.reading import best_matched_share, own_group_share

    identity = [[1.0, 0.0], [0.0, 1.0]]
    swapped = [[0.1, 0.8], [0.9, 0.2]]  # group 1 holds factor 2 and the other way round
    assert own_group_share(identity) == 1.0 and best_matched_share(identity) == 1.0
    assert own_group_share(swapped) == pytest.approx(0.15)
    assert best_matched_share(swapped) == pytest.approx(0.85)  # slices belong to no factor: the best pairing
    assert own_group_share([[0.2] * 5] * 5) == pytest.approx(0.2)  # spread evenly over five groups


def test_a_gap_is_a_difference_only_beyond_twice_the_spread_over_two_seeds() -> None:
    from kf_model.experiments.reading import verdict

    def spread(mean: float, std: float, n: int = 3) -> dict:
        return {"mean": mean, "std": std, "n": n}

    assert verdict(spread(0.98, 0.002), spread(0.96, 0.003)) == "ahead"
    assert verdict(spread(0.96, 0.003), spread(0.98, 0.002)) == "behind"
    assert verdict(spread(0.98, 0.01), spread(0.97, 0.01)) == "level"  # 1 point apart, 2 x 1 point of spread
    assert verdict(spread(0.99, 0.0, 1), spread(0.50, 0.0, 3)) == "open"  # one seed: a reading, not a result


def test_the_sweep_reading_compares_the_seeded_points_and_calls_a_gap_only_beyond_the_seeds_spread() -> None:
    from kf_model.experiments.reading import sweep_reading

    def point(beta: float, infomin: str, dci: float, std: float = 0.0, seeds: int = 1) -> dict:
        spread = {"mean": dci, "std": std, "n": seeds}
        return {"beta": beta, "infomin": infomin, "seeds": seeds, "mean_accuracy": {"mean": 0.91, "std": 0, "n": seeds},
                "pooled": {"dci_disentanglement": spread}, "z": {"dci_disentanglement": spread}}

    teacher = {"accuracy": {"shape": 1.0, "scale": 0.999, "orientation": 0.56, "pos_x": 0.998, "pos_y": 0.997},
               "mean_accuracy": 0.911, "features": {"dci_disentanglement": 0.8}}
    points = [point(0.0, "batch", 0.50, 0.01, 3), point(1e-3, "batch", 0.51, 0.01, 3), point(1.0, "vib", 0.40)]
    sweep = {"split": "validation carve-out", "teacher": teacher, "points": points}
    text = " ".join(sweep_reading(sweep).split())
    assert "3 points, 3 seeds at β = 0, 3 seeds at β = 0.001, one seed at each of the other 1" in text
    assert "at least 99.70 %" in text and "mean validation accuracy of 91.0 % (teacher 91.1 %)" in text
    assert "score a DCI disentanglement of 0.510 ± 0.010 against 0.500 ± 0.010 (within the seeds' spread)" in text
    assert "0.500–0.510 with the batch InfoMin over 2 values of β and 0.400 with the variational InfoMin" in text
    assert ("the largest gap between two points is 0.110 for the pooled TSN features (lowest β = 1 vib, one seed, "
            "highest β = 0.001 batch; twice the seeds' spread: 0.020)") in text
    assert text.endswith("and no point brings them up to the teacher's features.")
    close = {**sweep, "points": points[:2]}
    assert "no two points' DCI disentanglement differ by more than twice the seeds' spread" in sweep_reading(close)
    assert sweep_reading({**sweep, "points": []}) == "*The β / InfoMin sweep*: no point has been scored yet."


def test_the_claim_c_reading_counts_its_verdicts_and_says_when_a_test_cannot_separate() -> None:
    from kf_model.experiments.reading import claim_c

    def cell(kf: float, scratch: float) -> dict:
        return {"labels": 600, "kf_tsn": {"mean": kf, "std": 0.001, "n": 2},
                "scratch": {"mean": scratch, "std": 0.001, "n": 2}}

    results = {"methods": ["kf_tsn", "scratch"], "tasks": {
        "pos_x": {"ceiling": 0.99, "chance": 0.03, "fractions": {"0.01": cell(0.80, 0.40), "1": cell(0.95, 0.97)}},
        "pos_y": {"ceiling": 0.99, "chance": 0.03, "fractions": {"0.01": {}, "1": {}}}}}  # nothing finished yet
    text = " ".join(claim_c({"dsprites": results}).split())
    assert "On dSprites (2 seeds at most per cell so far): pos_x from 1 % of the labels (600 images): new TSN " \
           "80.0 % ± 0.1, ahead of the same network from scratch (40.0 % ± 0.1; ceiling 99.0 %, chance 3 %)" in text
    assert "ahead of the network from scratch on 1 of 1 held-out tasks, level on 0, behind on 0" in text
    assert "with all the labels, new TSN against scratch: pos_x 95.0 % ± 0.1 against 97.0 % ± 0.1" in text
    assert "hardly separates" not in text and "still open" not in text
    complete = " ".join(claim_c({"dsprites": {**results, "complete": True}}).split())
    assert "On dSprites (2 seeds per cell): pos_x" in complete  # every run finished: no "so far"
    one_seed = {"methods": ["kf_tsn", "scratch"], "tasks": {"pos_y": {"ceiling": 0.99, "chance": 0.03, "fractions": {
        "0.01": {"labels": 600, "kf_tsn": {"mean": 0.25, "std": 0.0, "n": 1},
                 "scratch": {"mean": 0.31, "std": 0.0, "n": 1}}}}}}
    open_text = " ".join(claim_c({"dsprites": one_seed}).split())
    assert "new TSN 25.0 %, against 31.0 % for the same network from scratch (one seed: no verdict yet; ceiling" \
           in open_text
    assert "level on 0, behind on 0, still open (one seed) on 1" in open_text
    close = {"methods": ["kf_tsn", "scratch"], "tasks": {"bag": {"ceiling": 0.99, "chance": 0.9,
                                                                 "fractions": {"0.01": cell(0.98, 0.975)}}}}
    assert "hardly separates them" in claim_c({"fashion-mnist": close})
    assert claim_c({"dsprites": {"methods": [], "tasks": {}}}) == "*Claim c*: no transfer run has finished yet."


def test_the_reading_needs_its_markers_in_the_readme() -> None:
    from kf_model.experiments.reading import READING_END, READING_START, with_reading

    readme = f"intro\n\n{READING_START} command -->\nold text\n{READING_END}\nrest\n"
    rewritten = with_reading(readme, "new text")
    assert rewritten == f"intro\n\n{READING_START} command -->\n\nnew text\n\n{READING_END}\nrest\n"
    with pytest.raises(KFError, match="claims reading"):
        with_reading("no markers here", "new text")


def test_the_measured_cost_counts_a_shared_run_once_and_prices_the_rest_by_kind_and_dataset() -> None:
    from kf_model.experiments.reading import cost

    def run(kind: str, seconds: float) -> dict:
        return {"kind": kind, "seconds": seconds / 2, "seconds_all_segments": seconds}  # resumed once

    claim_b = {"dataset": "dsprites", "runs": {"train-teacher-all": run("train", 3600), "score-a": run("score", 600)},
               "missing_runs": ["score-b"]}
    sweep = {"dataset": "dsprites", "runs": {"train-teacher-all": run("train", 3600)},  # the same run, shared
             "missing_runs": ["train-bank-x", "score-b"]}
    fashion = {"dataset": "fashion-mnist", "runs": {"transfer-bag-0.01-kf_tsn-s0": run("transfer", 120)},
               "missing_runs": ["transfer-bag-0.01-kf_tsn-s1", "score-c"]}
    text = " ".join(cost({"b": claim_b, "sweep": sweep, "fashion": fashion}).split())
    assert "The 3 finished runs took 1.2 hours of one core each" in text  # 60 + 10 + 2 minutes
    # score-b (10 min, dsprites' own scoring), train-bank-x (60), the Fashion-MNIST transfer (2), score-c (10: any)
    assert "the 4 still to run need about 1.4 more: about 2.6 core-hours" in text and "1.3 hours" in text
    assert "not counted" not in text
    only = {"dataset": "dsprites", "runs": {"score-a": run("score", 60)}, "missing_runs": ["train-z"]}
    assert "(1 of a kind not measured yet not counted)" in cost({"only": only})
