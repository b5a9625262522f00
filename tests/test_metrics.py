"""Known-value tests of kf_model.metrics (small sizes: the whole file runs in seconds on 2 CPU cores)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from kf_model import metrics as M
from kf_model.utils import count_parameters

# --------------------------------------------------------------------------------------------------
# fixtures: codes that are the factors, the factors rotated into every dim, and pure noise

FACTOR_SIZES = (3, 4, 5, 6)
N = 2000


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, s, N) for s in FACTOR_SIZES], axis=1)


@pytest.fixture(scope="module")
def codes(factors: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    exact = (factors - factors.mean(0)) / factors.std(0)
    identity = np.concatenate([exact, rng.normal(size=(N, 2))], axis=1)  # one dim per factor + 2 noise dims
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    return {"identity": identity, "rotated": identity @ rotation, "noise": rng.normal(size=(N, 6))}


@pytest.fixture(scope="module")
def reports(codes: dict[str, np.ndarray], factors: np.ndarray) -> dict[str, dict[str, float]]:
    return {name: M.disentanglement_report(c, factors) for name, c in codes.items()}


# --------------------------------------------------------------------------------------------------
# accuracy


def test_accuracy_hand_example() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1, 1, 1])
    assert M.accuracy(logits, targets) == 0.75
    assert M.accuracy(logits.numpy(), targets.numpy()) == 0.75
    assert M.accuracy(torch.tensor([0, 1, 0, 0]), targets) == 0.5  # already-predicted classes
    with pytest.raises(ValueError):
        M.accuracy(logits, torch.tensor([0, 1]))


def test_per_task_accuracy_follows_target_columns() -> None:
    targets = torch.tensor([[0, 2], [1, 0], [1, 1]])
    logits = {"shape": torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]),  # 2/3 right on column 0
              "scale": torch.tensor([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])}  # 3/3 on column 1
    result = M.per_task_accuracy(logits, targets)
    assert list(result) == ["shape", "scale"]
    assert result["shape"] == pytest.approx(2 / 3) and result["scale"] == 1.0
    with pytest.raises(ValueError):
        M.per_task_accuracy({"shape": logits["shape"]}, targets)


def test_one_vs_rest_accuracy_from_multiclass_hand_example() -> None:
    # class 0: "is it 0?" answered right on all 4; class 1: pred [F,T,F,F] vs true [F,F,F,T]: 2/4; class 2: 2/4
    got = M.one_vs_rest_accuracy_from_multiclass(torch.tensor([0, 1, 2, 2]), np.array([0, 2, 2, 1]), 3)
    assert got == [1.0, 0.5, 0.5]
    # a class never predicted nor present is answered "no" correctly everywhere
    assert M.one_vs_rest_accuracy_from_multiclass([0, 0], [0, 0], 2) == [1.0, 1.0]


# --------------------------------------------------------------------------------------------------
# linear probe and leakage


def test_linear_probe_separable_data_is_solved_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    centers = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    x = np.concatenate([centers[y] + 0.3 * rng.normal(size=(600, 3)), rng.normal(size=(600, 5))], axis=1)
    acc, weight = M.fit_linear_probe(x[:300], y[:300], x[300:], y[300:], 3, epochs=100, weight_decay=1e-3, seed=0)
    assert acc > 0.99
    assert weight.shape == (3, 8)
    assert np.abs(weight[:, :3]).mean() > 5 * np.abs(weight[:, 3:]).mean()  # the informative dims dominate
    acc2, weight2 = M.fit_linear_probe(x[:300], y[:300], x[300:], y[300:], 3, epochs=100, weight_decay=1e-3, seed=0)
    assert acc2 == acc and np.array_equal(weight, weight2)


def test_linear_probe_on_noise_is_at_chance() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 8)), rng.integers(0, 4, 2000)
    acc, _ = M.fit_linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], 4)
    assert abs(acc - 0.25) < 0.05


def test_linear_probe_rejects_labels_out_of_range() -> None:
    with pytest.raises(ValueError):
        M.fit_linear_probe(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]), torch.zeros(2, 2), torch.tensor([0, 1]), 3)


def _task_targets(n: int, sizes: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def test_leakage_sources_that_each_encode_one_task() -> None:
    sizes = (2, 3, 4)
    targets = _task_targets(1200, sizes, seed=0)
    rng = np.random.default_rng(1)
    sources = [np.concatenate([3.0 * np.eye(s)[targets[:, i]], rng.normal(size=(1200, 3))], axis=1)
               for i, s in enumerate(sizes)]
    out = M.leakage_matrix([torch.from_numpy(s) for s in sources], torch.from_numpy(targets), list(sizes))
    acc = np.array(out["accuracy"])
    assert acc.shape == (3, 3) and len(out["chance"]) == 3
    assert np.all(np.diag(acc) > 0.97) and out["diagonal_accuracy"] > 0.97
    assert abs(out["off_diagonal_excess"]) < 0.06  # other tasks: no better than the majority class
    assert out["off_diagonal_accuracy"] < max(out["chance"]) + 0.06
    assert out["num_train"] + out["num_test"] == 1200 and out["num_test"] == 600
    json.dumps(out)  # JSON-friendly


def test_leakage_sources_that_encode_all_tasks() -> None:
    sizes = (2, 3, 4)
    targets = _task_targets(1200, sizes, seed=0)
    everything = np.concatenate([3.0 * np.eye(s)[targets[:, i]] for i, s in enumerate(sizes)], axis=1)
    out = M.leakage_matrix([everything] * 3, targets, list(sizes))
    assert out["off_diagonal_accuracy"] > 0.97
    assert out["off_diagonal_excess"] > 0.3


def test_leakage_summary_undefined_unless_one_source_per_task() -> None:
    targets = _task_targets(200, (2, 3), seed=0)
    out = M.leakage_matrix([np.eye(2)[targets[:, 0]]], targets, [2, 3])
    assert np.array(out["accuracy"]).shape == (1, 2)
    assert out["diagonal_accuracy"] is None and out["off_diagonal_accuracy"] is None
    assert out["off_diagonal_excess"] is None


# --------------------------------------------------------------------------------------------------
# disentanglement


def test_entropy_in_base_edge_cases() -> None:
    assert M.entropy_in_base(np.array([0.25, 0.25, 0.25, 0.25]), 4) == pytest.approx(1.0)
    assert M.entropy_in_base(np.array([1.0, 0.0, 0.0]), 3) == 0.0
    assert M.entropy_in_base(np.array([1.0]), 1) == 0.0
    assert M.entropy_in_base(np.array([0.5, 0.5]), 4) == pytest.approx(0.5)


def test_histogram_discretize_known_bins() -> None:
    codes = np.array([[0.0, 5.0], [0.49, 5.0], [0.5, 5.0], [1.0, 5.0]])
    assert M.histogram_discretize(codes, num_bins=2).tolist() == [[0, 0], [0, 0], [1, 0], [1, 0]]
    assert M.histogram_discretize(codes[:, :1], num_bins=4)[:, 0].tolist() == [0, 1, 2, 3]


def test_mutual_information_and_mig_hand_computable() -> None:
    factor = np.array([[0], [0], [1], [1]])
    # dim 0 copies the factor (MI = ln 2); dim 1 = [0, 0, 0, 1]: joint counts (0,0):2 (1,0):1 (1,1):1, so
    # MI = H(f) + H(z) - H(f, z) = ln2 + (2 ln2 - 0.75 ln3) - 1.5 ln2 = 1.5 ln2 - 0.75 ln3
    codes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    mi1 = 1.5 * math.log(2) - 0.75 * math.log(3)
    assert M.discrete_entropy(factor[:, 0]) == pytest.approx(math.log(2))
    assert M.discrete_mutual_information(codes[:, 0], factor[:, 0]) == pytest.approx(math.log(2))
    assert M.discrete_mutual_information(codes[:, 1], factor[:, 0]) == pytest.approx(mi1)
    assert M.mig(codes, factor, num_bins=2) == pytest.approx((math.log(2) - mi1) / math.log(2))  # 0.689
    # an independent second dim gives the full gap; one dim alone is compared with MI 0
    assert M.mig(np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), factor, num_bins=2) == pytest.approx(1.0)
    assert M.mig(codes[:, :1], factor, num_bins=2) == pytest.approx(1.0)


def test_single_dim_accuracy_threshold_case() -> None:
    # two classes with means 0 and 10 on dim 0: nearest mean = threshold at 5; dim 1 is useless
    x = np.array([[0.0, 1.0], [10.0, 1.0]] * 50 + [[4.0, 1.0], [6.0, 1.0]] * 50)
    y = np.array([0, 1] * 100)
    acc = M.single_dim_accuracy(x, y, train_fraction=0.5, seed=0)
    assert acc[0] == 1.0 and acc[1] == pytest.approx(0.5, abs=0.1)


def test_identity_codes_score_high(reports: dict[str, dict[str, float]]) -> None:
    r = reports["identity"]
    assert r["mig"] > 0.8
    assert r["dci_disentanglement"] > 0.8
    assert r["dci_completeness"] > 0.7
    assert r["sap"] > 0.6


def test_rotated_codes_score_clearly_lower(reports: dict[str, dict[str, float]]) -> None:
    ident, rot = reports["identity"], reports["rotated"]
    for key in ("mig", "sap", "dci_disentanglement", "dci_completeness"):
        assert rot[key] < 0.6 * ident[key], key
    # a rotation keeps the information: a linear probe decodes it as well as before
    assert rot["dci_informativeness"] == pytest.approx(ident["dci_informativeness"], abs=0.05)


def test_noise_codes_score_near_zero(reports: dict[str, dict[str, float]]) -> None:
    r = reports["noise"]
    assert r["mig"] < 0.05 and r["sap"] < 0.05
    assert r["dci_disentanglement"] < 0.3
    chance = np.mean([1 / s for s in FACTOR_SIZES])
    assert abs(r["dci_informativeness"] - chance) < 0.05


def test_dci_shapes_and_importance(codes: dict[str, np.ndarray], factors: np.ndarray) -> None:
    out = M.linear_probe_dci(torch.from_numpy(codes["identity"]).float(), torch.from_numpy(factors))
    importance = np.array(out["importance"])
    assert importance.shape == (6, 4)
    assert importance[:4].argmax(axis=0).tolist() == [0, 1, 2, 3]  # factor k lives in dim k
    json.dumps(out)


def test_constant_factor_and_constant_code_give_no_nan(codes: dict[str, np.ndarray], factors: np.ndarray) -> None:
    with_constant = np.concatenate([factors[:300], np.full((300, 1), 7)], axis=1)
    code = np.concatenate([codes["identity"][:300], np.zeros((300, 1))], axis=1)  # and a dead code dim
    report = M.disentanglement_report(code, with_constant)
    assert all(math.isfinite(v) for v in report.values()), report
    assert report["mig"] > 0.7  # the constant factor is skipped, not counted as 0
    only_constant = np.full((300, 2), 3)
    report = M.disentanglement_report(code, only_constant)
    assert report == {"dci_disentanglement": 0.0, "dci_completeness": 0.0, "dci_informativeness": 0.0,
                      "mig": 0.0, "sap": 0.0}


# --------------------------------------------------------------------------------------------------
# parameters


def test_parameter_accounting_hand_example() -> None:
    out = M.parameter_accounting(100, [10, 20, 30], 500)
    assert out["bank_params"] == 160 and out["assembled_params_all_tasks"] == 160
    assert out["subset_students_params_paper"] == 8 * 100
    assert out["subset_students_params"] == 7 * 100
    # every non-empty subset stored as its own assembled network, counted by brute force
    brute = sum(M.assembled_parameters(100, [10, 20, 30], subset)
                for k in range(1, 4) for subset in itertools.combinations(range(3), k))
    assert out["materialised_subsets_params"] == brute == 700 + 4 * 60
    assert out["assembled_params_single_task"] == [110, 120, 130]
    assert out["assembled_params_by_subset_size"] == [120.0, 140.0, 160.0]
    assert out["bank_vs_teacher"] == pytest.approx(0.32)
    assert out["bank_fraction_of_subset_students"] == pytest.approx(160 / 700)
    json.dumps(out)
    huge = M.parameter_accounting(10**7, [10**5] * 1000, 10**8)  # ImageNet-sized n: exact ints, no overflow
    assert huge["subset_students_params"] == (2**1000 - 1) * 10**7
    assert 0.0 <= huge["bank_fraction_of_subset_students"] < 1e-290


def test_count_parameters() -> None:
    shared = nn.Linear(3, 4)  # 16 parameters
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2, bias=False))  # shared counted once
    assert count_parameters(model) == 16 + 8
    model[3].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 16
