"""Disentanglement metrics as disentanglement_lib defines them (Locatello et al. 2019), as pure functions.

The KF reference configs name disentanglement_lib's metrics (``dci``, ``mig``, ``sap_score``,
``beta_vae_sklearn``, ``factor_vae_metric``, ``modularity_explicitness``); these are their algorithms with
their defaults, so numbers can be compared with published ones:

- **DCI** (Eastwood & Williams 2018): importances from one scikit-learn ``GradientBoostingClassifier`` per
  factor (default settings); informativeness = its train / test accuracy.
- **MIG** (Chen et al. 2018) on codes discretised into 20 histogram bins per dimension.
- **SAP** (Kumar et al. 2018): per (dim, factor) a ``LinearSVC(C=0.01, class_weight="balanced")`` on that single
  dim, test accuracy; the mean gap between the two best dims.
- **BetaVAE score** (Higgins et al. 2017): logistic regression predicting which factor was held fixed from the
  mean |z1 - z2| over 64 pairs that share it.
- **FactorVAE score** (Kim & Mnih 2018): majority vote of the dim of least normalised variance over 64 samples
  that share one factor.
- **Modularity** (20-bin MI, Ridgeway & Zemel 2018) and **explicitness** (one-vs-rest ROC-AUC of a logistic
  regression on standardised codes).

Conventions: ``codes`` are ``[N, D]`` floats and ``factors`` ``[N, K]`` discrete classes (disentanglement_lib
uses the transposes). Metrics that intervene on factors (BetaVAE, FactorVAE) take a :class:`GroundTruth`: the
factor sizes and a function from factor classes ``[n, K]`` to codes ``[n, D]`` (rendering + the network).

Deviations, each to avoid a NaN the reference would produce: constant factors are left out of MIG (their
entropy is 0); FactorVAE prunes dims whose global variance is 0 (dead units; the reference divides by it);
explicitness scores only the classes seen in both training and test part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats
from sklearn import metrics as skmetrics
from sklearn import svm
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import label_binarize

NUM_BINS = 20  # disentanglement_lib's histogram discretisation


# ============================================================================= inputs

def _codes(codes: Any) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float64)
    codes = codes[:, None] if codes.ndim == 1 else codes
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise ValueError(f"codes must be [N >= 2, D >= 1], got shape {codes.shape}")
    return codes


def _factors(factors: Any, n: int) -> np.ndarray:
    factors = np.asarray(factors)
    factors = factors[:, None] if factors.ndim == 1 else factors
    if factors.ndim != 2 or factors.shape[0] != n:
        raise ValueError(f"factors must be [N = {n}, K], got shape {factors.shape}")
    return factors.astype(np.int64)


@dataclass(frozen=True)
class GroundTruth:
    """Factors one can intervene on: ``represent(classes [n, K] int) -> codes [n, D]``, classes uniform."""

    factor_sizes: tuple[int, ...]
    represent: Callable[[np.ndarray], np.ndarray]
    # Optional cells the metrics may use (classes [n, K] -> bool [n]), e.g. a validation split: samples are then
    # uniform over those cells (rejection), and so are the interventions that fix one factor. None: every cell.
    allowed: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self._redraw_disallowed(self._draw(n, rng), None, rng)

    def share_factor(self, factors: np.ndarray, k: int, values: Any, rng: np.random.Generator) -> np.ndarray:
        """``factors`` with factor ``k`` set to ``values``, the other factors redrawn where a cell is not allowed."""
        factors[:, k] = values
        return self._redraw_disallowed(factors, k, rng)

    def _redraw_disallowed(self, factors: np.ndarray, keep: int | None, rng: np.random.Generator,
                           candidates: int = 256, max_rounds: int = 1000) -> np.ndarray:
        if self.allowed is None:
            return factors  # no draw: the unrestricted sampling stream stays disentanglement_lib's
        bad = np.flatnonzero(~np.asarray(self.allowed(factors), dtype=bool))
        for _ in range(max_rounds):  # each round: `candidates` fresh draws per bad row, the first allowed one wins
            if not len(bad):
                return factors
            fresh = self._draw(len(bad) * candidates, rng).reshape(len(bad), candidates, -1)
            if keep is not None:
                fresh[:, :, keep] = factors[bad, keep][:, None]
            ok = np.asarray(self.allowed(fresh.reshape(-1, fresh.shape[-1])), dtype=bool).reshape(len(bad), -1)
            found = ok.any(axis=1)
            factors[bad[found]] = fresh[found, ok[found].argmax(axis=1)]
            bad = bad[~found]
        raise ValueError(f"no allowed cell in {max_rounds * candidates} draws per row: too few allowed cells")

    def sample(self, n: int, rng: np.random.Generator, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(codes [n, D], factors [n, K]) of ``n`` uniformly sampled factor combinations."""
        factors = self.sample_factors(n, rng)
        codes = np.concatenate([np.asarray(self.represent(factors[i:i + batch_size]), dtype=np.float64)
                                for i in range(0, n, batch_size)])
        return codes, factors


# ============================================================================= building blocks

def histogram_discretize(codes: Any, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each dim of codes [N, D] -> bin index 1..num_bins (numpy histogram edges), as disentanglement_lib does."""
    codes = _codes(codes)
    out = np.zeros(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        out[:, d] = np.digitize(codes[:, d], np.histogram(codes[:, d], num_bins)[1][:-1])
    return out


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """[D, K] plug-in mutual information (nats) between each discretised dim and each factor."""
    return np.array([[skmetrics.mutual_info_score(factors[:, k], discrete_codes[:, d])
                      for k in range(factors.shape[1])] for d in range(discrete_codes.shape[1])])


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """[K] entropy (nats) of each discrete factor."""
    return np.array([skmetrics.mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


# ============================================================================= DCI

def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix [D, K], as disentanglement_lib computes them."""
    importance = np.asarray(importance, dtype=np.float64)
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_weight = weights.sum(axis=1) / weights.sum()
    factor_weight = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_code * code_weight)), float(np.sum(per_factor * factor_weight))


def dci(codes_train: Any, factors_train: Any, codes_test: Any, factors_test: Any, *, seed: int = 0,
        n_estimators: int = 100) -> dict[str, Any]:
    """DCI with gradient-boosted-tree importances (disentanglement_lib ``dci``).

    Returns disentanglement, completeness, informativeness_train / _test (accuracies) and the importance
    matrix [D][K]. ``n_estimators`` is scikit-learn's default (100); a smaller value is a documented speed-up.
    """
    x_tr, x_te = _codes(codes_train), _codes(codes_test)
    y_tr, y_te = _factors(factors_train, len(x_tr)), _factors(factors_test, len(x_te))
    importance = np.zeros((x_tr.shape[1], y_tr.shape[1]))
    train_acc, test_acc = [], []
    for k in range(y_tr.shape[1]):
        if len(np.unique(y_tr[:, k])) < 2:  # a constant factor: nothing to predict, no importance
            train_acc.append(1.0)
            test_acc.append(float(np.mean(y_te[:, k] == y_tr[0, k])))
            continue
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
        model.fit(x_tr, y_tr[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(float(np.mean(model.predict(x_tr) == y_tr[:, k])))
        test_acc.append(float(np.mean(model.predict(x_te) == y_te[:, k])))
    disentanglement, completeness = dci_from_importance(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness_train": float(np.mean(train_acc)), "informativeness_test": float(np.mean(test_acc)),
            "importance": importance.tolist()}


# ============================================================================= MIG, SAP, modularity, explicitness

def mig(codes: Any, factors: Any, *, num_bins: int = NUM_BINS) -> float:
    """Mutual information gap on 20-bin histogram codes (disentanglement_lib ``mig``); constant factors skipped."""
    codes = _codes(codes)
    factors = _factors(factors, len(codes))
    mi = mutual_information_matrix(histogram_discretize(codes, num_bins), factors)
    entropy = factor_entropies(factors)
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    live = entropy > 0
    return float(np.mean((top[0] - second)[live] / entropy[live])) if live.any() else 0.0


def sap_score_matrix(codes_train: Any, factors_train: Any, codes_test: Any, factors_test: Any) -> np.ndarray:
    """[D, K] test accuracy of a balanced linear SVM (C = 0.01) on each single dim, for each factor."""
    x_tr, x_te = _codes(codes_train), _codes(codes_test)
    y_tr, y_te = _factors(factors_train, len(x_tr)), _factors(factors_test, len(x_te))
    scores = np.zeros((x_tr.shape[1], y_tr.shape[1]))
    for d in range(x_tr.shape[1]):
        for k in range(y_tr.shape[1]):
            if len(np.unique(y_tr[:, k])) < 2:
                scores[d, k] = float(np.mean(y_te[:, k] == y_tr[0, k]))
                continue
            classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
            classifier.fit(x_tr[:, d:d + 1], y_tr[:, k])
            scores[d, k] = float(np.mean(classifier.predict(x_te[:, d:d + 1]) == y_te[:, k]))
    return scores


def sap(codes_train: Any, factors_train: Any, codes_test: Any, factors_test: Any) -> float:
    """SAP score (disentanglement_lib ``sap_score``, discrete factors): mean over factors of top-1 - top-2."""
    scores = np.sort(sap_score_matrix(codes_train, factors_train, codes_test, factors_test), axis=0)
    if scores.shape[0] < 2:
        return float(np.mean(scores[-1]))
    return float(np.mean(scores[-1] - scores[-2]))


def modularity_from_mi(mutual_information: np.ndarray) -> float:
    """Modularity of an MI matrix [D, K]: 1 - (sum of squared MI but the max) / (max * (K - 1)), mean over dims.

    A dim with no information scores 0 (disentanglement_lib's convention).
    """
    squared = np.square(np.asarray(mutual_information, dtype=np.float64))
    if squared.shape[1] < 2:
        return 1.0
    top = squared.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (squared.sum(axis=1) - top) / (top * (squared.shape[1] - 1.0))
    score[top == 0] = 0.0
    return float(np.mean(score))


def explicitness_per_factor(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
                            ) -> tuple[float, float]:
    """(train, test) macro one-vs-rest ROC-AUC of a logistic regression on (standardised) codes."""
    classes = np.unique(y_train)
    if len(classes) < 2:
        return 1.0, 1.0
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)

    def auc(x: np.ndarray, y: np.ndarray) -> float:
        truth = label_binarize(y, classes=model.classes_)
        proba = model.predict_proba(x)
        if len(model.classes_) == 2:  # label_binarize gives one column for two classes
            truth, proba = np.concatenate([1 - truth, truth], axis=1), proba
        keep = [c for c in range(truth.shape[1]) if 0 < truth[:, c].sum() < len(truth)]
        return float(skmetrics.roc_auc_score(truth[:, keep], proba[:, keep], average="macro")) if keep else 1.0

    return auc(x_train, y_train), auc(x_test, y_test)


def modularity_explicitness(codes_train: Any, factors_train: Any, codes_test: Any, factors_test: Any, *,
                            num_bins: int = NUM_BINS) -> dict[str, float]:
    """disentanglement_lib ``modularity_explicitness``: modularity on 20-bin MI, explicitness train / test."""
    x_tr, x_te = _codes(codes_train), _codes(codes_test)
    y_tr, y_te = _factors(factors_train, len(x_tr)), _factors(factors_test, len(x_te))
    modularity = modularity_from_mi(mutual_information_matrix(histogram_discretize(x_tr, num_bins), y_tr))
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    scores = [explicitness_per_factor(x_tr, y_tr[:, k], x_te, y_te[:, k]) for k in range(y_tr.shape[1])]
    return {"modularity": modularity, "explicitness_train": float(np.mean([s[0] for s in scores])),
            "explicitness_test": float(np.mean([s[1] for s in scores]))}


# ============================================================================= intervention metrics

def beta_vae_score(truth: GroundTruth, *, seed: int = 0, batch_size: int = 64, num_train: int = 10000,
                   num_eval: int = 5000) -> dict[str, float]:
    """BetaVAE score (disentanglement_lib ``beta_vae_sklearn``): train and eval accuracy."""
    rng = np.random.default_rng(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        features, labels = [], []
        for _ in range(n):
            k = int(rng.integers(truth.num_factors))
            first, second = truth.sample_factors(batch_size, rng), truth.sample_factors(batch_size, rng)
            second = truth.share_factor(second, k, first[:, k], rng)
            diff = np.abs(np.asarray(truth.represent(first), np.float64) - np.asarray(truth.represent(second)))
            features.append(diff.mean(axis=0))
            labels.append(k)
        return np.stack(features), np.array(labels)

    x_tr, y_tr = points(num_train)
    model = LogisticRegression(max_iter=1000, random_state=seed).fit(x_tr, y_tr)
    x_te, y_te = points(num_eval)
    return {"train_accuracy": float(model.score(x_tr, y_tr)), "eval_accuracy": float(model.score(x_te, y_te))}


def factor_vae_score(truth: GroundTruth, *, seed: int = 0, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000) -> dict[str, float | int]:
    """FactorVAE score (disentanglement_lib ``factor_vae_metric``): majority-vote train and eval accuracy."""
    rng = np.random.default_rng(seed)
    codes, _ = truth.sample(num_variance_estimate, rng)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = global_variances > 0
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    def votes(n: int) -> np.ndarray:
        counts = np.zeros((truth.num_factors, codes.shape[1]), dtype=np.int64)
        active_index = np.flatnonzero(active)
        for _ in range(n):
            k = int(rng.integers(truth.num_factors))
            factors = truth.sample_factors(batch_size, rng)
            factors = truth.share_factor(factors, k, factors[0, k], rng)
            local = np.var(np.asarray(truth.represent(factors), np.float64), axis=0, ddof=1)
            counts[k, active_index[np.argmin(local[active] / global_variances[active])]] += 1
        return counts

    train = votes(num_train)
    classifier = np.argmax(train, axis=0)  # the majority factor of each dim
    dims = np.arange(train.shape[1])
    evaluation = votes(num_eval)
    return {"train_accuracy": float(train[classifier, dims].sum() / train.sum()),
            "eval_accuracy": float(evaluation[classifier, dims].sum() / evaluation.sum()),
            "num_active_dims": int(active.sum())}


# ============================================================================= everything at once

@dataclass(frozen=True)
class Budget:
    """Sample sizes. The defaults are disentanglement_lib's; ``quick`` is for a shared CPU (say so when used)."""

    num_train: int = 10000
    num_test: int = 5000
    intervention_train: int = 10000
    intervention_eval: int = 5000
    batch_size: int = 64
    gbt_estimators: int = 100
    # DCI's gradient-boosted trees fit on the first ``dci_samples`` train and half as many test samples (None: all):
    # one tree per class per round makes them the one metric whose cost a CPU cannot pay at the full budget
    dci_samples: int | None = None

    @classmethod
    def quick(cls) -> Budget:
        return cls(num_train=1000, num_test=500, intervention_train=300, intervention_eval=150, batch_size=64,
                   gbt_estimators=20)


def all_metrics(truth: GroundTruth, *, seed: int = 0, budget: Budget = Budget(),
                explicitness: bool = True) -> dict[str, Any]:
    """Every metric of the reference configs on one representation, as a flat JSON-able dict.

    ``explicitness=False`` skips its logistic regressions (the slowest part on a small budget) and keeps
    modularity, which needs only the MI matrix."""
    rng = np.random.default_rng(seed)
    x_tr, y_tr = truth.sample(budget.num_train, rng)
    x_te, y_te = truth.sample(budget.num_test, rng)
    fit, score = (slice(None), slice(None)) if budget.dci_samples is None else (
        slice(budget.dci_samples), slice(max(2, budget.dci_samples // 2)))
    scores = dci(x_tr[fit], y_tr[fit], x_te[score], y_te[score], seed=seed, n_estimators=budget.gbt_estimators)
    result: dict[str, Any] = {
        "dci_disentanglement": scores["disentanglement"], "dci_completeness": scores["completeness"],
        "dci_informativeness_test": scores["informativeness_test"], "mig": mig(x_tr, y_tr),
        "sap": sap(x_tr, y_tr, x_te, y_te), "dci_importance": scores["importance"]}
    if explicitness:
        result.update(modularity_explicitness(x_tr, y_tr, x_te, y_te))
    else:
        result["modularity"] = modularity_from_mi(mutual_information_matrix(histogram_discretize(x_tr), y_tr))
    result["beta_vae"] = beta_vae_score(truth, seed=seed, batch_size=budget.batch_size,
                                        num_train=budget.intervention_train,
                                        num_eval=budget.intervention_eval)["eval_accuracy"]
    result["factor_vae"] = factor_vae_score(truth, seed=seed, batch_size=budget.batch_size,
                                            num_train=budget.intervention_train, num_eval=budget.intervention_eval,
                                            num_variance_estimate=budget.num_train)["eval_accuracy"]
    result["code_dims"] = int(x_tr.shape[1])
    return result


METRIC_NAMES: Sequence[str] = ("dci_disentanglement", "dci_completeness", "dci_informativeness_test", "mig", "sap",
                               "modularity", "explicitness_test", "beta_vae", "factor_vae")

__all__ = [
    "METRIC_NAMES", "Budget", "GroundTruth", "all_metrics", "beta_vae_score", "dci", "dci_from_importance",
    "factor_entropies", "factor_vae_score", "histogram_discretize", "mig", "modularity_explicitness",
    "modularity_from_mi", "mutual_information_matrix", "sap", "sap_score_matrix",
]
