"""Fast linear-probe disentanglement proxies: DCI, MIG, SAP (not comparable with published numbers; the
disentanglement_lib metrics are in ``kf_model.experiments.disentanglement``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from kf_model.errors import InvalidArgumentError
from kf_model.metrics.arrays import (
    ArrayLike,
    codes_2d,
    entropy_in_base,
    factor_codes,
    one_thread,
    split_indices,
    to_numpy,
)
from kf_model.metrics.probes import fit_linear_probe


def linear_probe_dci(
    codes: ArrayLike,
    factors: ArrayLike,
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
    epochs: int = 100,
    weight_decay: float = 1e-3,
) -> dict[str, Any]:
    """A linear-probe (L2 logistic regression) variant of DCI (Eastwood & Williams 2018) of codes [N, D] vs
    discrete factors [N, K]. For the reference's gradient-boosted-tree DCI see
    ``kf_model.experiments.disentanglement.dci``.

    Importance R[d, k] = mean over classes of |weight| of a linear probe (standardised codes -> factor k),
    see the module docstring for how this differs from the paper's lasso / random forest.
    - disentanglement = sum_d rho_d (1 - H_K(R[d, :] / sum)) with rho_d = sum_k R[d, k] / sum R;
    - completeness = mean_k (1 - H_D(R[:, k] / sum));
    - informativeness = mean_k held-out probe accuracy (not chance-corrected).
    Constant factors carry nothing to disentangle and are left out (their importance column is 0); with no
    non-constant factor all three scores are 0. Also returns "importance" [D][K] for plotting.

    Known bias of L2 (vs lasso) importances: a dim that carries no information still gets small weights,
    spread evenly over the factors (estimation noise, ~ sqrt(classes / N)), so many such dims lower both
    scores: exact codes of dSprites-sized factors (3, 6, 40, 32, 32) plus 59 pure-noise dims score
    D ~ 0.5 with N = 5,000 (D ~ 1 without the noise dims). We keep L2 anyway: a group-lasso probe tried
    instead gave pure-noise codes D ~ 0.6 or randomly rotated factors D ~ 0.8 depending on its penalty,
    while L2 ranks identity > rotation (~0.15) > noise (~0.1) stably. Compare codes of equal width.
    """
    labels, sizes = factor_codes(factors)
    codes_np = codes_2d(codes, labels.shape[0])
    n, d = codes_np.shape
    train_idx, test_idx = split_indices(n, train_fraction, seed)
    x = torch.from_numpy(codes_np)
    importance = np.zeros((d, len(sizes)))
    accs = []
    for k, size in enumerate(sizes):
        if size < 2:
            continue
        y = torch.from_numpy(labels[:, k])
        acc, w = fit_linear_probe(x[train_idx], y[train_idx], x[test_idx], y[test_idx], size,
                                  epochs=epochs, weight_decay=weight_decay, seed=seed)
        importance[:, k] = np.abs(w).mean(axis=0)
        accs.append(acc)
    live = [k for k, size in enumerate(sizes) if size >= 2]
    r = importance[:, live]
    if not live or r.sum() <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(np.mean(accs)) if accs else 0.0,
                "importance": importance.tolist()}

    row_sums = r.sum(axis=1)
    rho = row_sums / row_sums.sum()
    per_dim = [1.0 - entropy_in_base(r[i] / row_sums[i], len(live)) if row_sums[i] > 0 else 0.0 for i in range(d)]
    col_sums = r.sum(axis=0)
    per_factor = [1.0 - entropy_in_base(r[:, k] / col_sums[k], d) if col_sums[k] > 0 else 0.0
                  for k in range(len(live))]
    return {"disentanglement": float((rho * np.array(per_dim)).sum()), "completeness": float(np.mean(per_factor)),
            "informativeness": float(np.mean(accs)), "importance": importance.tolist()}


def histogram_discretize(codes: ArrayLike, num_bins: int = 20) -> np.ndarray:
    """Each column of codes [N, D] cut into ``num_bins`` equal-width bins over its [min, max]: int [N, D].

    The maximum falls in the last bin; a constant column is all bin 0.
    """
    codes = to_numpy(codes).astype(np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    lo, hi = codes.min(axis=0), codes.max(axis=0)
    width = (hi - lo) / num_bins
    safe = np.where(width > 0, width, 1.0)
    bins = np.floor((codes - lo) / safe).astype(np.int64)
    bins[:, width <= 0] = 0
    return np.clip(bins, 0, num_bins - 1)


def discrete_entropy(labels: ArrayLike) -> float:
    """Plug-in entropy (nats) of a discrete variable [N]."""
    _, counts = np.unique(to_numpy(labels).reshape(-1), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def discrete_mutual_information(a: ArrayLike, b: ArrayLike) -> float:
    """Plug-in mutual information (nats) of two discrete variables [N], from their joint histogram."""
    _, a_idx = np.unique(to_numpy(a).reshape(-1), return_inverse=True)
    _, b_idx = np.unique(to_numpy(b).reshape(-1), return_inverse=True)
    a_idx, b_idx = a_idx.reshape(-1), b_idx.reshape(-1)
    if a_idx.shape != b_idx.shape:
        raise InvalidArgumentError("both variables need the same number of samples")
    na, nb = int(a_idx.max()) + 1, int(b_idx.max()) + 1
    joint = np.bincount(a_idx * nb + b_idx, minlength=na * nb).reshape(na, nb) / len(a_idx)
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(max((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum(), 0.0))


def mig(codes: ArrayLike, factors: ArrayLike, num_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018) of codes [N, D] w.r.t. discrete factors [N, K].

    Per factor k: (I(v_k; z_top1) - I(v_k; z_top2)) / H(v_k) over the code dims sorted by mutual
    information, with codes discretised by ``histogram_discretize``; the mean over factors. Constant
    factors (H = 0) are skipped (0.0 when all are); with one code dim the second-best MI is taken as 0.
    """
    labels, sizes = factor_codes(factors)
    binned = histogram_discretize(codes_2d(codes, labels.shape[0]), num_bins)
    gaps = []
    for k, size in enumerate(sizes):
        if size < 2:
            continue
        mi = sorted((discrete_mutual_information(binned[:, i], labels[:, k]) for i in range(binned.shape[1])),
                    reverse=True)
        mi.append(0.0)  # second-best MI when there is a single code dim
        gaps.append((mi[0] - mi[1]) / discrete_entropy(labels[:, k]))
    return float(np.mean(gaps)) if gaps else 0.0


def single_dim_accuracy(
    codes: ArrayLike, factor: ArrayLike, *, train_fraction: float = 0.5, seed: int = 0, chunk: int = 4096
) -> np.ndarray:
    """Held-out accuracy [D] of a nearest-class-mean classifier on each single code dim for one factor [N].

    Class means come from the train part (classes absent from it are never predicted); ties go to the
    lowest class index. This is SAP's per-dimension score matrix, one column at a time.
    """
    labels, sizes = factor_codes(to_numpy(factor).reshape(-1))
    y, num_classes = torch.from_numpy(labels[:, 0]), sizes[0]
    x = torch.from_numpy(codes_2d(codes, y.shape[0]))
    train_idx, test_idx = split_indices(x.shape[0], train_fraction, seed)
    x_tr, y_tr = x[train_idx], y[train_idx]
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, y_tr, x_tr)
    counts = torch.bincount(y_tr, minlength=num_classes).to(torch.float64)[:, None]
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.inf))  # [C, D]
    correct = torch.zeros(x.shape[1], dtype=torch.float64)
    with one_thread():
        for start in range(0, len(test_idx), chunk):
            idx = test_idx[start:start + chunk]
            pred = (x[idx][:, None, :] - means[None]).abs().argmin(dim=1)  # [n, D]
            correct += (pred == y[idx][:, None]).sum(dim=0)
    return (correct / len(test_idx)).numpy()


def sap(codes: ArrayLike, factors: ArrayLike, *, train_fraction: float = 0.5, seed: int = 0) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018), classification variant, of codes [N, D].

    Per factor: the gap between the best and second-best single-dim accuracy (``single_dim_accuracy``,
    nearest class mean, not chance-corrected, as in the paper); the mean over factors. Constant factors
    are skipped (0.0 when all are); with one code dim the second-best accuracy is taken as 0.
    """
    labels, sizes = factor_codes(factors)
    codes_np = codes_2d(codes, labels.shape[0])
    gaps = []
    for k, size in enumerate(sizes):
        if size < 2:
            continue
        acc = np.sort(single_dim_accuracy(codes_np, labels[:, k], train_fraction=train_fraction, seed=seed))[::-1]
        gaps.append(float(acc[0] - (acc[1] if len(acc) > 1 else 0.0)))
    return float(np.mean(gaps)) if gaps else 0.0


def disentanglement_report(
    codes: ArrayLike, factors: ArrayLike, *, seed: int = 0, num_bins: int = 20
) -> dict[str, float]:
    """Linear-probe DCI, MIG and nearest-mean SAP of codes [N, D] vs factors [N, K] as one flat dict of floats."""
    scores = linear_probe_dci(codes, factors, seed=seed)
    return {"dci_disentanglement": scores["disentanglement"], "dci_completeness": scores["completeness"],
            "dci_informativeness": scores["informativeness"], "mig": mig(codes, factors, num_bins=num_bins),
            "sap": sap(codes, factors, seed=seed)}
