"""Losses of Knowledge Factorization: pure functions, plus the InfoMax-Bottleneck objective.

The paper's objective (Yang, Ye, Wang, ECCV 2022), per factor network i:

    L = CE_ls(logits_i, y_i) + task_weight * CE_ls(aux_i, y_i) + lambda_kd * KD(logits_i, teacher_i)
      + lambda_feat * InfoMax(CKN features, teacher features) + beta * sum_i InfoMin(z_i)

Conventions used throughout (so that weights mean the same thing for any number of tasks):

- per-sample terms are averaged over the batch;
- per-task supervised terms (CE, auxiliary CE, KD) are averaged over tasks, so the learning rate does
  not depend on how many tasks are factorised; the InfoMin penalty is summed over tasks, as in the paper;
- KL penalties on features are averaged over feature dimensions, so beta does not depend on the width;
- math runs in at least float32 (half-precision inputs are upcast) and on the inputs' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kf_model.errors import InvalidArgumentError

# Added to the batch variance before its log: the penalty is then the exact KL of N(mu, var + eps), so it
# stays >= 0 and finite (instead of +inf) when a feature dimension collapses to a constant.
VAR_EPS = 1e-6


def _upcast(x: Tensor) -> Tensor:
    """Half/bfloat16 -> float32 (softmax, log and variance lose too much in 16 bits); float64 is kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# --------------------------------------------------------------------------------------------------
# Supervised terms


def label_smoothed_ce(logits: Tensor, target: Tensor, smoothing: float = 0.1) -> Tensor:
    """Cross-entropy against (1 - smoothing) * one_hot(target) + smoothing / K, batch mean.

    Same convention as ``F.cross_entropy(..., label_smoothing=...)``: the uniform part includes the
    true class. logits [B, K] float, target [B] int64.
    """
    if not 0.0 <= smoothing < 1.0:
        raise InvalidArgumentError(f"smoothing must be in [0, 1), got {smoothing}")
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise InvalidArgumentError(
            f"expected logits [B, K] and target [B], got {tuple(logits.shape)} and {tuple(target.shape)}")
    logp = F.log_softmax(_upcast(logits), dim=1)
    nll = -logp.gather(1, target.long().unsqueeze(1)).squeeze(1)  # -log p_y
    uniform = -logp.mean(dim=1)  # -(1/K) sum_k log p_k
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton's distillation loss T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, batch mean.

    The T^2 factor keeps the gradient scale roughly independent of T (the soft-target gradients shrink
    like 1/T^2). Gradients flow into both arguments; detach the teacher's logits if it is frozen.
    """
    if temperature <= 0:
        raise InvalidArgumentError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise InvalidArgumentError(
            f"expected two [B, K] logits of the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    log_ps = F.log_softmax(_upcast(student_logits) / temperature, dim=1)
    log_pt = F.log_softmax(_upcast(teacher_logits) / temperature, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)
    return temperature**2 * kl.mean()


def multitask_ce(logits: dict[str, Tensor], targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean over tasks of the (label-smoothed) cross-entropy: the teacher's training loss.

    The iteration order of ``logits`` is the column order of ``targets`` [B, T].
    """
    _check_targets(logits, targets)
    losses = [label_smoothed_ce(lg, targets[:, i], label_smoothing) for i, lg in enumerate(logits.values())]
    return torch.stack(losses).mean()


def distillation_objective(
    logits: dict[str, Tensor],
    targets: Tensor,
    teacher_logits: dict[str, Tensor],
    *,
    label_smoothing: float,
    lambda_kd: float,
    temperature: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The KD baseline's loss: mean over tasks of CE_ls + lambda_kd * KD (same helpers as IMBObjective).

    Returns (total, terms) with detached terms "ce", "kd" (unweighted task means) and "total".
    """
    _check_targets(logits, targets)
    _check_has_tasks(logits, teacher_logits, "teacher_logits")
    ce, kd = _supervised_terms(logits, targets, teacher_logits, label_smoothing, temperature)
    total = ce + lambda_kd * kd
    return total, {"ce": ce.detach(), "kd": kd.detach(), "total": total.detach()}


# --------------------------------------------------------------------------------------------------
# InfoMax: the CKN keeps what the teacher knows


def infomax_dv(teacher_projected: Tensor, student: Tensor, temperature: float) -> Tensor:
    """Negative Donsker-Varadhan bound on I(teacher; student) for one stage, with a cosine critic.

    u, c = L2-normalised rows of ``teacher_projected`` and ``student`` [B, D]; S = u @ c^T / temperature.
    Matching rows (the diagonal) are samples of the joint, other pairs samples of the product of marginals:

        loss = -mean_i S_ii + log( mean_{i != j} exp S_ij )          (logsumexp for stability)

    This fixes two defects of the reference code: it divided the diagonal *sum* by B^2 (so the joint term
    shrank with the batch size), and it kept the masked diagonal as exp(0) = 1 inside the log term. Lower
    is better. Needs B >= 2, since the marginal term has no pairs otherwise.
    """
    if temperature <= 0:
        raise InvalidArgumentError(f"temperature must be > 0, got {temperature}")
    if teacher_projected.ndim != 2 or teacher_projected.shape != student.shape:
        raise InvalidArgumentError(
            f"expected two [B, D] features of the same shape, got {tuple(teacher_projected.shape)} "
            f"and {tuple(student.shape)}"
        )
    b = student.shape[0]
    if b < 2:
        raise InvalidArgumentError(f"InfoMax needs a batch of at least 2 samples (off-diagonal pairs), got {b}")
    u = F.normalize(_upcast(teacher_projected), dim=1)
    c = F.normalize(_upcast(student), dim=1)
    s = u @ c.T / temperature
    joint = s.diagonal().mean()
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    marginal = torch.logsumexp(s.masked_fill(eye, float("-inf")).flatten(), dim=0) - math.log(b * (b - 1))
    return marginal - joint


class InfoMaxProjector(nn.Module):
    """P_l: maps a pooled teacher stage feature to the CKN stage width (Linear -> BN -> ReLU -> Linear).

    Trained with the CKN; it lets the critic compare features of different widths and bases.
    ``hidden`` defaults to ``out_dim``, as in the reference.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = out_dim if hidden is None else hidden
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------------
# InfoMin: each TSN keeps only what its task needs


def _gaussian_kl(mu: Tensor, var: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(mu, var) || N(0, 1)) = (mu^2 + var - log var - 1) / 2."""
    return 0.5 * (mu.square() + var - logvar - 1.0)


def _check_bc_or_btc(x: Tensor, name: str) -> None:
    if x.ndim not in (2, 3):
        raise InvalidArgumentError(f"{name} must be [B, C] or [B, T, C], got shape {tuple(x.shape)}")


def infomin_batch_kl(z: Tensor) -> Tensor:
    """The reference's bottleneck: KL(N(mu_B, var_B) || N(0, 1)) of the batch moments, mean over dims.

    mu_B, var_B are the batch mean and the *biased* batch variance (divide by B: the maximum-likelihood
    Gaussian fit of the batch) of each dimension; var_B + VAR_EPS is used, see VAR_EPS. It pulls the
    batch distribution of z towards N(0, I), which limits how much z can carry.

    z [B, C] -> scalar; z [B, T, C] (one z_i per task) -> [T], one penalty per task (the objective sums
    them). Needs B >= 2 (one sample has no variance).
    """
    _check_bc_or_btc(z, "z")
    if z.shape[0] < 2:
        raise InvalidArgumentError(f"the batch InfoMin penalty needs a batch of at least 2 samples, got {z.shape[0]}")
    z = _upcast(z)
    mu = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False) + VAR_EPS
    return _gaussian_kl(mu, var, var.log()).mean(dim=-1)


def vib_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """Textbook variational bottleneck: per-sample KL(N(mu, exp(logvar)) || N(0, 1)).

    Averaged over dimensions (the same scale as ``infomin_batch_kl``, so one beta fits both; the
    reference summed over dimensions here) and over the batch. [B, C] -> scalar; [B, T, C] -> [T].
    """
    _check_bc_or_btc(mu, "mu")
    if mu.shape != logvar.shape:
        raise InvalidArgumentError(
            f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    mu, logvar = _upcast(mu), _upcast(logvar)
    return _gaussian_kl(mu, logvar.exp(), logvar).mean(dim=-1).mean(dim=0)


# --------------------------------------------------------------------------------------------------
# The InfoMax-Bottleneck objective


@dataclass
class IMBConfig:
    """Weights of the IMB objective; defaults are the reference's (CIFAR-10 / dSprites configs)."""

    label_smoothing: float = 0.1
    task_weight: float = 1.0  # weight of the TSN-only auxiliary head's CE (the reference uses 0.1 on ImageNet)
    lambda_kd: float = 0.1
    kd_temperature: float = 10.0
    lambda_feat: float = 1.0
    # Cosine scores lie in [-1, 1]: at temperature 1 the DV bound cannot exceed 2 nats and aligned pairs are
    # barely told apart from the rest. 0.1 is the usual contrastive value (SimCLR/MoCo use 0.07-0.5). It
    # scales the InfoMax gradients by 1/temperature, so lambda_feat is not on the reference's scale.
    infomax_temperature: float = 0.1
    beta: float = 1e-3
    infomin: Literal["batch", "vib"] = "batch"  # batch: infomin_batch_kl(z_i); vib: vib_kl(mu_i, logvar_i)

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self) if f.name != "infomin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidArgumentError(f"IMBConfig.{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidArgumentError(f"IMBConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("task_weight", "lambda_kd", "lambda_feat", "beta"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"IMBConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("kd_temperature", "infomax_temperature"):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"IMBConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.infomin not in ("batch", "vib"):
            raise InvalidArgumentError(f"IMBConfig.infomin must be 'batch' or 'vib', got {self.infomin!r}")


class IMBObjective(nn.Module):
    """The paper's InfoMax-Bottleneck loss; owns the trainable projectors P_l (teacher -> CKN stage width).

    total = mean_i [CE_ls(logits_i) + task_weight * CE_ls(aux_i) + lambda_kd * KD(logits_i, teacher_i)]
          + lambda_feat * mean_l InfoMax(P_l(teacher_l), ckn_l) + beta * sum_i InfoMin(z_i)

    The returned terms are the unweighted, detached values ("ce", "aux_ce", "kd" are task means,
    "infomax" the stage mean, "infomin" the task sum), so total = ce + task_weight * aux_ce
    + lambda_kd * kd + lambda_feat * infomax + beta * infomin. Teacher logits and features are detached
    here (the teacher is frozen; P_l still trains). Unlabelled images (``targets=None``, e.g. a task map's
    coarse questions on a folder of photographs) drop the CE term and distil the auxiliary head instead:
    total = task_weight * KD(aux_i, teacher_i) + lambda_kd * KD(logits_i, teacher_i) + InfoMax + InfoMin.

    :meth:`frozen_ckn` configures it for a frozen CKN (growing a bank: one new TSN): no projectors and no
    InfoMax term (it trains the CKN), and the KD term only when teacher logits are given.
    """

    def __init__(self, teacher_widths: list[int], ckn_widths: list[int], config: IMBConfig, *,
                 frozen_ckn: bool = False) -> None:
        super().__init__()
        self.frozen_ckn = frozen_ckn
        if frozen_ckn:
            teacher_widths, ckn_widths = [], []
        elif len(teacher_widths) != len(ckn_widths) or not teacher_widths:
            raise InvalidArgumentError(
                f"need one teacher width per CKN stage, got teacher {list(teacher_widths)} and CKN {list(ckn_widths)}"
            )
        if not isinstance(config, IMBConfig):
            raise InvalidArgumentError(f"config must be an IMBConfig, got {type(config).__name__}")
        self.config = config
        self.projectors = nn.ModuleList(InfoMaxProjector(t, c) for t, c in zip(teacher_widths, ckn_widths, strict=True))

    @classmethod
    def frozen_ckn(cls, config: IMBConfig) -> IMBObjective:
        """The objective of new factors on a frozen CKN: CE + task_weight * aux CE (+ lambda_kd * KD with a
        teacher) + beta * InfoMin; nothing trainable of its own."""
        return cls([], [], config, frozen_ckn=True)

    def forward(
        self,
        *,
        logits: dict[str, Tensor],
        aux_logits: dict[str, Tensor],
        targets: Tensor | None,
        teacher_logits: dict[str, Tensor] | None,
        ckn_features: list[Tensor],
        teacher_features: list[Tensor],
        task_features: Tensor,
        mu: Tensor | None = None,
        logvar: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns (total loss, detached terms). Shapes: targets [B, T] int64 in the order of ``logits``, or None
        for unlabelled images (no CE term: KD + InfoMax + InfoMin only, and the auxiliary head is distilled from
        the teacher: term "aux_kd" instead of "aux_ce"); pooled features [B, D_l]; task_features, mu, logvar
        [B, T, C] (mu/logvar only for infomin="vib"). ``teacher_logits`` None (a frozen-CKN objective with
        labels only): no KD term."""
        cfg = self.config
        labelled = targets is not None
        if labelled:
            _check_targets(logits, targets)
        _check_has_tasks(logits, aux_logits, "aux_logits", exact=True)
        if teacher_logits is None and not self.frozen_ckn:
            raise InvalidArgumentError("the IMB objective of a factorization needs the teacher's logits")
        if teacher_logits is None and not labelled:
            raise InvalidArgumentError("unlabelled images (targets=None) need the teacher's logits to distil")
        if teacher_logits is not None:
            _check_has_tasks(logits, teacher_logits, "teacher_logits")
        if not logits:
            raise InvalidArgumentError("logits must hold at least one task")
        batch, num_tasks = next(iter(logits.values())).shape[0], len(logits)
        if batch < 2:
            raise InvalidArgumentError(
                f"the IMB objective needs a batch of at least 2 samples (InfoMax, InfoMin), got {batch}")
        n = len(self.projectors)
        if len(ckn_features) != n or len(teacher_features) != n:
            raise InvalidArgumentError(
                f"expected {n} CKN and {n} teacher stage features, got {len(ckn_features)} and {len(teacher_features)}"
            )

        if labelled:
            ce, kd = _supervised_terms(logits, targets, teacher_logits, cfg.label_smoothing, cfg.kd_temperature)
            aux = torch.stack([label_smoothed_ce(aux_logits[name], targets[:, i], cfg.label_smoothing)
                               for i, name in enumerate(logits)]).mean()
        else:
            ce = next(iter(logits.values())).new_zeros(())
            kd = _kd_term(logits, teacher_logits, cfg.kd_temperature)
            aux = _kd_term({name: aux_logits[name] for name in logits}, teacher_logits, cfg.kd_temperature)
        zero = ce.new_zeros(())

        infomax = torch.stack(
            [
                infomax_dv(proj(t.detach()), c, cfg.infomax_temperature)
                for proj, t, c in zip(self.projectors, teacher_features, ckn_features, strict=True)
            ]
        ).mean() if n else zero  # a frozen CKN: nothing for InfoMax to train

        if cfg.infomin == "batch":
            _check_task_tensor(task_features, batch, num_tasks, "task_features")
            infomin = infomin_batch_kl(task_features).sum()
        else:
            if mu is None or logvar is None:
                raise InvalidArgumentError(
                    "IMBConfig.infomin='vib' needs the TSNs' mu and logvar; pass mu= and logvar=")
            _check_task_tensor(mu, batch, num_tasks, "mu")
            infomin = vib_kl(mu, logvar).sum()

        total = ce + cfg.task_weight * aux
        if teacher_logits is not None:
            total = total + cfg.lambda_kd * kd
        if n:
            total = total + cfg.lambda_feat * infomax
        total = total + cfg.beta * infomin
        terms = {"ce": ce, "aux_ce" if labelled else "aux_kd": aux, "kd": kd, "infomax": infomax,
                 "infomin": infomin, "total": total}
        return total, {k: v.detach() for k, v in terms.items()}


# --------------------------------------------------------------------------------------------------
# Helpers


def _supervised_terms(
    logits: dict[str, Tensor],
    targets: Tensor,
    teacher_logits: dict[str, Tensor] | None,
    label_smoothing: float,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """(mean over tasks of CE_ls, mean over tasks of KD: 0 without teacher logits); the teacher's logits are
    detached."""
    ce = torch.stack([label_smoothed_ce(lg, targets[:, i], label_smoothing) for i, lg in enumerate(logits.values())])
    if teacher_logits is None:
        return ce.mean(), ce.new_zeros(())
    return ce.mean(), _kd_term(logits, teacher_logits, temperature)


def _kd_term(logits: dict[str, Tensor], teacher_logits: dict[str, Tensor], temperature: float) -> Tensor:
    """Mean over tasks of KD towards the (detached) teacher's logits of the same task."""
    return torch.stack([kd_loss(lg, teacher_logits[name].detach(), temperature) for name, lg in logits.items()]).mean()


def _check_targets(logits: dict[str, Tensor], targets: Tensor) -> None:
    if not logits:
        raise InvalidArgumentError("logits must hold at least one task")
    if targets.ndim != 2 or targets.shape[1] != len(logits):
        raise InvalidArgumentError(
            f"targets must be [B, {len(logits)}] (one column per task), got {tuple(targets.shape)}")
    for name, lg in logits.items():
        if lg.ndim != 2 or lg.shape[0] != targets.shape[0]:
            raise InvalidArgumentError(f"logits[{name!r}] must be [{targets.shape[0]}, K], got {tuple(lg.shape)}")


def _check_has_tasks(logits: dict[str, Tensor], other: dict[str, Tensor], name: str, exact: bool = False) -> None:
    """``other`` is looked up by task name: it must hold every task of ``logits`` (and only those if exact)."""
    missing = [t for t in logits if t not in other]
    extra = [t for t in other if t not in logits] if exact else []
    if missing or extra:
        raise InvalidArgumentError(f"{name} must hold the tasks {list(logits)}; missing {missing}, unexpected {extra}")


def _check_task_tensor(x: Tensor, batch: int, num_tasks: int, name: str) -> None:
    if x.ndim != 3 or x.shape[:2] != (batch, num_tasks):
        raise InvalidArgumentError(f"{name} must be [{batch}, {num_tasks}, C], got {tuple(x.shape)}")
