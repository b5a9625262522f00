"""Metrics of kf: accuracy, linear-probe leakage, quick disentanglement proxies, parameter accounting.

The disentanglement scores here are fast linear-probe proxies used by ``kf_model.evaluation`` on every bank
(seconds on 2,000 samples of 256-d features); they are NOT comparable with published numbers. The metrics as
disentanglement_lib defines them (gradient-boosted-tree DCI, SVM SAP, BetaVAE, FactorVAE, ...) are in
``kf_model.disentanglement``.

Every function here is pure: it takes torch tensors or numpy arrays and returns floats, lists, dicts or
numpy arrays, so results can go straight into ``results.json``. Dict results hold only floats, ints,
lists and ``None`` (never NaN): a degenerate case (a constant factor, a single source) is skipped or
reported as ``None``, as each docstring says.

Estimator choices (no scikit-learn / scipy here, so some differ from the papers; each is named where used):
- linear probe: multinomial logistic regression on standardised features, full-batch L-BFGS,
  L2 penalty on the weights (not the bias). Deterministic.
- DCI (Eastwood & Williams 2018): the paper's importances come from lasso or random forests; ours are the
  absolute weights of the linear probe above (no L1), averaged over classes; informativeness is the probe's
  test *accuracy* (the paper reports a regression error instead).
- MIG (Chen et al. 2018): codes discretised into equal-width bins per dimension, plug-in (histogram)
  mutual information, as in disentanglement_lib.
- SAP (Kumar et al. 2018), classification variant: per (code dim, factor) the test accuracy of a
  nearest-class-mean classifier on that single dim (for two classes this is a single threshold at the
  midpoint of the class means); disentanglement_lib uses a linear SVM per dim instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kf_model.errors import InvalidArgumentError

ArrayLike = torch.Tensor | np.ndarray

# --------------------------------------------------------------------------------------------------
# conversions and small helpers


def _to_numpy(x: ArrayLike | Sequence[Any]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _to_float64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.detach().cpu().to(torch.float64)


def _to_labels(x: ArrayLike | Sequence[int]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    return x.detach().cpu().to(torch.int64).reshape(-1)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous count.

    Probes are small (thousands x tens), so extra threads only add synchronisation; on a shared CPU
    spin-waiting OpenMP threads made them 10-20x slower than one thread in our measurements.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _split_indices(n: int, train_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/held-out split of ``range(n)``; both parts non-empty."""
    if n < 2:
        raise InvalidArgumentError(f"need at least 2 samples to split into train and held-out parts, got {n}")
    if not 0.0 < train_fraction < 1.0:
        raise InvalidArgumentError(f"train_fraction must be in (0, 1), got {train_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = min(max(round(n * train_fraction), 1), n - 1)
    return perm[:n_train], perm[n_train:]


def _factor_codes(factors: ArrayLike) -> tuple[np.ndarray, list[int]]:
    """Factors [N, K] of arbitrary discrete values -> class indices 0..C_k-1 per column, and the C_k."""
    factors = _to_numpy(factors)
    if factors.ndim == 1:
        factors = factors[:, None]
    if factors.ndim != 2:
        raise InvalidArgumentError(f"factors must be [N, K], got shape {tuple(factors.shape)}")
    columns, sizes = [], []
    for k in range(factors.shape[1]):
        values, inverse = np.unique(factors[:, k], return_inverse=True)
        columns.append(inverse.reshape(-1).astype(np.int64))
        sizes.append(len(values))
    return np.stack(columns, axis=1), sizes


def _codes_2d(codes: ArrayLike, n: int) -> np.ndarray:
    codes = _to_numpy(codes).astype(np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[0] != n:
        raise InvalidArgumentError(f"codes must be [N, D] with N = {n} (as factors), got shape {tuple(codes.shape)}")
    return codes


def entropy_in_base(p: np.ndarray, base: int) -> float:
    """Entropy of the distribution ``p`` (sums to 1) with logarithms in ``base``; 0 when base < 2.

    Used by DCI, where the base is the number of factors (rows) or code dims (columns), so the result is
    in [0, 1]. Zero-probability entries contribute 0 (the 0 log 0 = 0 convention), never NaN.
    """
    if base < 2:
        return 0.0
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(base))


# --------------------------------------------------------------------------------------------------
# accuracy


def accuracy(logits: ArrayLike, targets: ArrayLike) -> float:
    """Top-1 accuracy of ``logits`` [N, C] (or already-predicted classes [N]) against ``targets`` [N]."""
    logits = torch.as_tensor(_to_numpy(logits))
    targets = _to_labels(targets)
    pred = logits.argmax(dim=-1) if logits.ndim == 2 else logits.reshape(-1).to(torch.int64)
    if pred.shape[0] != targets.shape[0]:
        raise InvalidArgumentError(f"{pred.shape[0]} predictions for {targets.shape[0]} targets")
    if targets.numel() == 0:
        raise InvalidArgumentError("accuracy of zero samples is undefined")
    return float((pred == targets).to(torch.float64).mean())


def per_task_accuracy(logits: dict[str, ArrayLike], targets: ArrayLike) -> dict[str, float]:
    """Accuracy per task; the i-th entry of ``logits`` is scored against column i of ``targets`` [N, T]."""
    targets = torch.as_tensor(_to_numpy(targets))
    if targets.ndim != 2 or targets.shape[1] != len(logits):
        raise InvalidArgumentError(
            f"targets must be [N, {len(logits)}] (one column per task), got {tuple(targets.shape)}")
    return {name: accuracy(task_logits, targets[:, i]) for i, (name, task_logits) in enumerate(logits.items())}


def one_vs_rest_accuracy_from_multiclass(pred_class: ArrayLike, true_class: ArrayLike, num_classes: int) -> list[float]:
    """For each class k, accuracy of the binary question "is it class k?" read off K-way predictions.

    This is how a K-way teacher is scored on the K one-vs-rest tasks that its factors learn: a sample counts
    as correct for task k when (pred == k) equals (true == k), so most samples are correct for most k.
    """
    pred, true = _to_labels(pred_class), _to_labels(true_class)
    if pred.shape != true.shape or pred.numel() == 0:
        raise InvalidArgumentError(
            f"need equally many (>0) predictions and targets, got {pred.numel()} and {true.numel()}")
    classes = torch.arange(num_classes)
    correct = (pred[:, None] == classes) == (true[:, None] == classes)  # [N, K]
    return [float(v) for v in correct.to(torch.float64).mean(dim=0)]


# --------------------------------------------------------------------------------------------------
# linear probe and leakage


def fit_linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    num_classes: int,
    *,
    epochs: int = 100,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """Multinomial logistic regression from features to labels; returns (test accuracy, weight [C, D]).

    Features are standardised with the train part's mean and std (constant features become 0), so the
    weight magnitudes are comparable across dims (DCI reads them as importances). The loss is mean
    cross-entropy + ``weight_decay/2 * ||W||^2`` (the bias is not penalised); it is strictly convex, so
    full-batch L-BFGS (``epochs`` = its maximum iterations) from a small ``seed``-ed init reaches the same
    optimum every run (float32 after float64 standardisation: float64 gives the same weights, 2x slower).
    """
    x_tr, x_te = _to_float64(train_x), _to_float64(test_x)
    y_tr, y_te = _to_labels(train_y), _to_labels(test_y)
    if x_tr.ndim == 1:
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    if x_tr.shape[0] != y_tr.shape[0] or x_te.shape[0] != y_te.shape[0] or y_tr.numel() == 0 or y_te.numel() == 0:
        raise InvalidArgumentError("train/test features and labels must be non-empty and have matching lengths")
    for y in (y_tr, y_te):
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise InvalidArgumentError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")

    mean = x_tr.mean(dim=0)
    std = x_tr.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    x_tr, x_te = ((x_tr - mean) / std).float(), ((x_te - mean) / std).float()

    gen = torch.Generator().manual_seed(seed)
    weight = (1e-3 * torch.randn(x_tr.shape[1], num_classes, generator=gen)).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=epochs, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_tr @ weight + bias, y_tr) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), _one_thread():
        optimizer.step(closure)
    with torch.no_grad():
        test_acc = accuracy(x_te @ weight + bias, y_te)
    return test_acc, weight.detach().T.numpy().copy()


def leakage_matrix(
    features: Sequence[ArrayLike],
    targets: ArrayLike,
    num_classes: Sequence[int],
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
    epochs: int = 100,
    weight_decay: float = 1e-3,
) -> dict[str, Any]:
    """How well each source (e.g. each TSN's features) linearly decodes each task, on held-out samples.

    A linear probe is fitted for every (source i, task j) on one random part of the samples (the same split
    for all cells) and scored on the rest. Returns:
    - "accuracy": [S][T] held-out probe accuracy; "excess": [S][T] accuracy - chance;
    - "chance": [T] majority-class frequency of task j on the held-out part;
    - "diagonal_accuracy", "off_diagonal_accuracy", "off_diagonal_excess": means over cells i == j and
      i != j. They need source i to belong to task i, so are defined only when S == T (and off-diagonal
      only when T >= 2); otherwise ``None``;
    - "num_train", "num_test".
    High off-diagonal excess means task-specific features leak other tasks' information.
    """
    targets_t = torch.as_tensor(_to_numpy(targets)).to(torch.int64)
    if targets_t.ndim != 2 or targets_t.shape[1] != len(num_classes):
        raise InvalidArgumentError(
            f"targets must be [N, {len(num_classes)}] (one column per task), got {tuple(targets_t.shape)}")
    n, num_tasks = targets_t.shape
    feats = [_to_float64(f).reshape(n, -1) for f in features]
    if not feats:
        raise InvalidArgumentError("leakage_matrix needs at least one source of features")
    train_idx, test_idx = _split_indices(n, train_fraction, seed)

    chance = []
    for j in range(num_tasks):
        counts = torch.bincount(targets_t[test_idx, j], minlength=num_classes[j])
        chance.append(float(counts.max()) / len(test_idx))
    acc = [[fit_linear_probe(f[train_idx], targets_t[train_idx, j], f[test_idx], targets_t[test_idx, j],
                             num_classes[j], epochs=epochs, weight_decay=weight_decay, seed=seed)[0]
            for j in range(num_tasks)] for f in feats]
    excess = [[a - c for a, c in zip(row, chance)] for row in acc]

    diag = off_acc = off_excess = None
    if len(feats) == num_tasks:
        diag = float(np.mean([acc[i][i] for i in range(num_tasks)]))
        if num_tasks >= 2:
            off = [(i, j) for i in range(num_tasks) for j in range(num_tasks) if i != j]
            off_acc = float(np.mean([acc[i][j] for i, j in off]))
            off_excess = float(np.mean([excess[i][j] for i, j in off]))
    return {"accuracy": acc, "chance": chance, "excess": excess, "diagonal_accuracy": diag,
            "off_diagonal_accuracy": off_acc, "off_diagonal_excess": off_excess,
            "num_train": len(train_idx), "num_test": len(test_idx)}


# --------------------------------------------------------------------------------------------------
# disentanglement: DCI, MIG, SAP


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
    discrete factors [N, K]. For the reference's gradient-boosted-tree DCI see ``kf_model.disentanglement.dci``.

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
    labels, sizes = _factor_codes(factors)
    codes_np = _codes_2d(codes, labels.shape[0])
    n, d = codes_np.shape
    train_idx, test_idx = _split_indices(n, train_fraction, seed)
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
    codes = _to_numpy(codes).astype(np.float64)
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
    _, counts = np.unique(_to_numpy(labels).reshape(-1), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def discrete_mutual_information(a: ArrayLike, b: ArrayLike) -> float:
    """Plug-in mutual information (nats) of two discrete variables [N], from their joint histogram."""
    _, a_idx = np.unique(_to_numpy(a).reshape(-1), return_inverse=True)
    _, b_idx = np.unique(_to_numpy(b).reshape(-1), return_inverse=True)
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
    labels, sizes = _factor_codes(factors)
    binned = histogram_discretize(_codes_2d(codes, labels.shape[0]), num_bins)
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
    labels, sizes = _factor_codes(_to_numpy(factor).reshape(-1))
    y, num_classes = torch.from_numpy(labels[:, 0]), sizes[0]
    x = torch.from_numpy(_codes_2d(codes, y.shape[0]))
    train_idx, test_idx = _split_indices(x.shape[0], train_fraction, seed)
    x_tr, y_tr = x[train_idx], y[train_idx]
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, y_tr, x_tr)
    counts = torch.bincount(y_tr, minlength=num_classes).to(torch.float64)[:, None]
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.inf))  # [C, D]
    correct = torch.zeros(x.shape[1], dtype=torch.float64)
    with _one_thread():
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
    labels, sizes = _factor_codes(factors)
    codes_np = _codes_2d(codes, labels.shape[0])
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


# --------------------------------------------------------------------------------------------------
# parameters


def assembled_parameters(ckn_params: int, tsn_params: Sequence[int], subset: Iterable[int]) -> int:
    """Parameters of the network assembled from the CKN and the TSNs with the given task indices."""
    return int(ckn_params) + sum(int(tsn_params[i]) for i in set(subset))


def parameter_accounting(ckn_params: int, tsn_params: Sequence[int], teacher_params: int) -> dict[str, Any]:
    """Storage of a factor bank against one distilled student per subset of tasks (the paper's argument).

    With n tasks, S = CKN size and s_i = TSN sizes:
    - "bank_params" = S + sum_i s_i (= n*s + S): everything needed to assemble any subset;
    - "subset_students_params_paper" = 2^n * S: the paper's count, one S-sized student per subset;
    - "subset_students_params" = (2^n - 1) * S: the same over non-empty subsets only;
    - "materialised_subsets_params" = sum over non-empty subsets A of (S + sum_{i in A} s_i)
      = (2^n - 1) S + 2^(n-1) sum_i s_i: storing every assembled network separately;
    - "assembled_params_single_task" [n] = S + s_i, "assembled_params_all_tasks" = bank_params,
      "assembled_params_by_subset_size" [n]: entry k-1 = mean size of an assembled network over the
      subsets of size k = S + k * mean(s);
    - "bank_fraction_of_subset_students" = bank / ((2^n - 1) S), "bank_vs_teacher" = bank / teacher.
    Counts are exact Python ints (2^n grows fast: for n = 1000 they have ~300 digits); the fraction
    is computed as int / int, so it shrinks towards 0.0 instead of overflowing.
    """
    n, s_total = len(tsn_params), sum(int(p) for p in tsn_params)
    big_s = int(ckn_params)
    if n == 0:
        raise InvalidArgumentError("parameter_accounting needs at least one TSN")
    bank = big_s + s_total
    subsets = (2**n - 1) * big_s
    return {
        "num_tasks": n,
        "ckn_params": big_s,
        "tsn_params": [int(p) for p in tsn_params],
        "teacher_params": int(teacher_params),
        "bank_params": bank,
        "subset_students_params_paper": 2**n * big_s,
        "subset_students_params": subsets,
        "materialised_subsets_params": subsets + 2 ** (n - 1) * s_total,
        "assembled_params_single_task": [big_s + int(p) for p in tsn_params],
        "assembled_params_all_tasks": bank,
        "assembled_params_by_subset_size": [big_s + k * s_total / n for k in range(1, n + 1)],
        "bank_fraction_of_subset_students": bank / subsets if subsets else None,
        "bank_vs_teacher": bank / int(teacher_params) if teacher_params else None,
    }
