"""kf_model.experiments.disentanglement: known values on fixtures, and a cross-check against the `disent` package.

Fixtures (3 independent uniform factors of 4, 5 and 6 classes): exact factors as codes, the same codes
rotated, pure noise, and every factor duplicated in two dims. `disent` (a test-only dependency) implements
DCI, MIG, SAP and FactorVAE independently; they must agree within 0.02. It has no BetaVAE, modularity or
explicitness: those are checked on values known in closed form, and modularity's discretisation + mutual
information against disent's helpers.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from kf_model.experiments import disentanglement as D

SIZES = (4, 5, 6)
ROTATION = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))[0]


def _standard(factors: np.ndarray) -> np.ndarray:
    sizes = np.array(SIZES)
    return (factors - (sizes - 1) / 2) / (sizes / 3.5)


def exact(factors: np.ndarray) -> np.ndarray:
    return factors.astype(np.float64)


def rotated(factors: np.ndarray) -> np.ndarray:
    return _standard(factors) @ ROTATION


_noise_rng = np.random.default_rng(3)


def noise(factors: np.ndarray) -> np.ndarray:
    return _noise_rng.normal(size=(len(factors), 3))


def duplicated(factors: np.ndarray) -> np.ndarray:
    return np.concatenate([exact(factors), exact(factors)], axis=1)


FIXTURES = {"exact": exact, "rotated": rotated, "noise": noise, "duplicated": duplicated}


@functools.cache  # the noise fixture draws new noise on every call: every test sees the same sample
def data(name: str, n_train: int = 1000, n_test: int = 500, seed: int = 0):
    truth = D.GroundTruth(SIZES, FIXTURES[name])
    rng = np.random.default_rng(seed)
    return (*truth.sample(n_train, rng), *truth.sample(n_test, rng))


@pytest.fixture(scope="module")
def scores() -> dict[str, dict]:
    out = {}
    for name in FIXTURES:
        x_tr, y_tr, x_te, y_te = data(name)
        out[name] = {"dci": D.dci(x_tr, y_tr, x_te, y_te, n_estimators=30), "mig": D.mig(x_tr, y_tr),
                     "sap": D.sap(x_tr, y_tr, x_te, y_te), **D.modularity_explicitness(x_tr, y_tr, x_te, y_te)}
    return out


# ----------------------------------------------------------------------------- known values

def test_exact_factors_score_perfectly(scores) -> None:
    s = scores["exact"]
    assert s["dci"]["disentanglement"] > 0.98 and s["dci"]["completeness"] > 0.98
    assert s["dci"]["informativeness_test"] == 1.0
    assert s["mig"] > 0.97  # plug-in MI of independent factors is slightly positive
    assert s["modularity"] > 0.97 and s["explicitness_test"] > 0.97


def test_duplicated_dims_keep_disentanglement_but_lose_gaps_and_completeness(scores) -> None:
    s = scores["duplicated"]
    assert s["dci"]["disentanglement"] > 0.95 and s["dci"]["completeness"] < 0.9
    assert s["mig"] < 0.02 and abs(s["sap"]) < 0.02  # two equally good dims: no gap
    assert s["modularity"] > 0.97


def test_rotation_and_noise_rank_below_exact(scores) -> None:
    for metric in ("mig", "sap", "modularity"):
        assert scores["exact"][metric] > scores["rotated"][metric] > scores["noise"][metric] - 0.02, metric
    assert scores["exact"]["dci"]["disentanglement"] > scores["rotated"]["dci"]["disentanglement"]
    assert scores["noise"]["mig"] < 0.05 and abs(scores["noise"]["sap"]) < 0.05
    assert scores["rotated"]["explicitness_test"] > 0.8  # rotated codes are as explicit (linear), not modular
    assert abs(scores["noise"]["explicitness_test"] - 0.5) < 0.05
    assert scores["noise"]["dci"]["informativeness_test"] < 0.35  # chance is 1/4, 1/5, 1/6


def test_intervention_scores_on_fixtures() -> None:
    kw = dict(num_train=200, num_eval=200, seed=0)
    for name, low in (("exact", 1.0), ("duplicated", 1.0)):
        truth = D.GroundTruth(SIZES, FIXTURES[name])
        assert D.beta_vae_score(truth, **kw)["eval_accuracy"] >= low
        assert D.factor_vae_score(truth, num_variance_estimate=1000, **kw)["eval_accuracy"] >= low
    noisy = D.GroundTruth(SIZES, noise)
    assert D.beta_vae_score(noisy, **kw)["eval_accuracy"] < 0.5  # chance is 1/3
    dead = D.GroundTruth(SIZES, lambda f: np.concatenate([exact(f), np.zeros((len(f), 1))], axis=1))
    result = D.factor_vae_score(dead, num_variance_estimate=1000, **kw)
    assert result["num_active_dims"] == 3 and result["eval_accuracy"] == 1.0  # a dead unit is pruned, no NaN


def test_modularity_and_dci_on_hand_computed_matrices() -> None:
    assert D.modularity_from_mi(np.array([[1.0, 0.0], [0.0, 2.0]])) == 1.0
    # one dim equally informative about both factors: 1 - (2 - 1) / (1 * 1) = 0; a silent dim scores 0
    assert D.modularity_from_mi(np.array([[1.0, 1.0], [0.0, 0.0]])) == 0.0
    assert D.modularity_from_mi(np.array([[2.0, 1.0]])) == pytest.approx(1 - 1 / 4)
    disentanglement, completeness = D.dci_from_importance(np.eye(3))
    assert disentanglement == pytest.approx(1.0) and completeness == pytest.approx(1.0)
    disentanglement, completeness = D.dci_from_importance(np.ones((2, 2)))
    assert disentanglement == pytest.approx(0.0, abs=1e-9) and completeness == pytest.approx(0.0, abs=1e-9)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="factors must be"):
        D.mig(np.zeros((10, 2)), np.zeros((9, 2)))
    with pytest.raises(ValueError, match="codes must be"):
        D.mig(np.zeros((1, 2)), np.zeros((1, 2)))


# ----------------------------------------------------------------------------- cross-check against disent

def needs_disent() -> None:
    """Skip only the cross-checks (not the known-value tests) where the test-only dependency is missing."""
    pytest.importorskip("disent.metrics._dci", reason="the test-only dependency `disent` is not installed")


@pytest.mark.parametrize("name", list(FIXTURES))
def test_dci_mig_sap_agree_with_disent(name: str, scores) -> None:
    needs_disent()
    from disent.metrics._dci import _compute_dci
    from disent.metrics._mig import _compute_mig
    from disent.metrics._sap import _compute_sap

    x_tr, y_tr, x_te, y_te = data(name)
    ours = scores[name]
    theirs_mig = _compute_mig(x_tr.T, y_tr.T)["mig.discrete_score"]
    assert abs(ours["mig"] - theirs_mig) <= 0.02
    theirs_sap = _compute_sap(x_tr.T, y_tr.T, x_te.T, y_te.T, continuous_factors=False)["sap.score"]
    assert abs(ours["sap"] - theirs_sap) <= 0.02
    import sklearn.ensemble

    class Trees(sklearn.ensemble.GradientBoostingClassifier):  # our (fewer) trees and seed: ties break alike
        def __init__(self, **kw):
            super().__init__(n_estimators=30, **kw)

    original = sklearn.ensemble.GradientBoostingClassifier
    sklearn.ensemble.GradientBoostingClassifier = Trees
    try:
        theirs = _compute_dci(x_tr.T, y_tr.T, x_te.T, y_te.T)
    finally:
        sklearn.ensemble.GradientBoostingClassifier = original
    assert abs(ours["dci"]["disentanglement"] - theirs["dci.disentanglement"]) <= 0.02
    assert abs(ours["dci"]["completeness"] - theirs["dci.completeness"]) <= 0.02
    assert abs(ours["dci"]["informativeness_test"] - theirs["dci.informativeness_test"]) <= 0.02


def test_mutual_information_of_modularity_agrees_with_disent() -> None:
    needs_disent()
    from disent.metrics import utils

    x_tr, y_tr, _, _ = data("rotated")
    theirs = utils.discrete_mutual_info(utils.histogram_discretize(x_tr.T, 20), y_tr.T)
    ours = D.mutual_information_matrix(D.histogram_discretize(x_tr), y_tr)
    assert np.abs(ours - theirs).max() <= 1e-9


class _DisentView:
    """The few methods of a disent DisentDataset its FactorVAE metric calls: observations are the factors."""

    def __init__(self, truth: D.GroundTruth, rng: np.random.Generator) -> None:
        self.truth, self.rng = truth, rng
        self.gt_data = self

    @property
    def num_factors(self) -> int:
        return self.truth.num_factors

    def sample_factors(self, n: int) -> np.ndarray:
        return self.truth.sample_factors(n, self.rng)

    def dataset_sample_batch(self, n: int, mode: str) -> np.ndarray:
        return self.sample_factors(n)

    def dataset_batch_from_factors(self, factors: np.ndarray, mode: str) -> np.ndarray:
        return factors


@pytest.mark.parametrize("name", ["exact", "rotated", "duplicated"])
def test_factor_vae_agrees_with_disent(name: str) -> None:
    needs_disent()
    from disent.metrics._factor_vae import metric_factor_vae

    truth = D.GroundTruth(SIZES, FIXTURES[name])
    kw = dict(batch_size=64, num_train=1500, num_eval=1500, num_variance_estimate=5000)
    ours = D.factor_vae_score(truth, seed=0, **kw)["eval_accuracy"]
    np.random.seed(0)  # disent draws the held factor from numpy's global RNG
    theirs = metric_factor_vae(_DisentView(truth, np.random.default_rng(1)), truth.represent, **kw)
    assert abs(ours - theirs["factor_vae.eval_accuracy"]) <= 0.02


def test_allowed_cells_restrict_samples_and_interventions_and_change_nothing_without() -> None:
    sizes = (3, 4, 5)
    seen: list[np.ndarray] = []

    def represent(classes: np.ndarray) -> np.ndarray:
        seen.append(classes.copy())
        return classes.astype(np.float64)

    def even(classes: np.ndarray) -> np.ndarray:
        return classes.sum(axis=1) % 2 == 0

    restricted = D.GroundTruth(sizes, represent, even)
    D.beta_vae_score(restricted, num_train=6, num_eval=6, batch_size=8)
    D.factor_vae_score(restricted, num_train=6, num_eval=6, batch_size=8, num_variance_estimate=50)
    rows = np.concatenate(seen)
    assert len(rows) > 300 and even(rows).all()  # every sample and every intervention stays inside the cells
    rng = np.random.default_rng(0)
    shared = restricted.share_factor(restricted.sample_factors(200, rng), 1, 3, rng)
    assert (shared[:, 1] == 3).all() and even(shared).all() and len(np.unique(shared, axis=0)) > 5

    plain = D.GroundTruth(sizes, lambda c: c.astype(np.float64))  # no cells given: disentanglement_lib's stream
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    drawn = plain.share_factor(plain.sample_factors(10, a), 2, 4, a)
    expected = np.stack([b.integers(0, s, 10) for s in sizes], axis=1)
    expected[:, 2] = 4
    assert np.array_equal(drawn, expected) and a.integers(1 << 30) == b.integers(1 << 30)
    with pytest.raises(ValueError, match="too few allowed cells"):
        D.GroundTruth(sizes, represent, lambda c: np.zeros(len(c), bool)).sample_factors(2, rng)
