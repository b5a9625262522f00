"""Known-value tests of kf_model.losses (hand-computed values, each able to fail)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from kf_model.errors import InvalidArgumentError
from kf_model.losses import (
    IMBConfig,
    IMBObjective,
    InfoMaxProjector,
    distillation_objective,
    infomax_dv,
    infomin_batch_kl,
    kd_loss,
    label_smoothed_ce,
    multitask_ce,
    vib_kl,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


# ------------------------------------------------------------------ label-smoothed CE


def test_label_smoothed_ce_hand_value():
    # logits [0, ln 3] -> p = [1/4, 3/4]; target 1; smoothed target q = [0.05, 0.95]
    logits = torch.tensor([[0.0, LN3]])
    got = label_smoothed_ce(logits, torch.tensor([1]), smoothing=0.1)
    want = -(0.05 * math.log(0.25) + 0.95 * math.log(0.75))
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_label_smoothed_ce_is_batch_mean_and_matches_torch():
    torch.manual_seed(0)
    logits, target = torch.randn(7, 5), torch.randint(0, 5, (7,))
    assert label_smoothed_ce(logits, target, 0.0).item() == pytest.approx(F.cross_entropy(logits, target).item(), 1e-6)
    ref = F.cross_entropy(logits, target, label_smoothing=0.3)
    assert label_smoothed_ce(logits, target, 0.3).item() == pytest.approx(ref.item(), 1e-6)
    with pytest.raises(ValueError):
        label_smoothed_ce(logits, target, 1.0)


# ------------------------------------------------------------------ KD


def test_kd_zero_for_equal_logits_positive_otherwise():
    torch.manual_seed(0)
    s = torch.randn(4, 6)
    assert kd_loss(s, s.clone(), 10.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, torch.randn(4, 6), 10.0).item() > 0


def test_kd_hand_value():
    # T = 2: t/T = [0, ln 3] -> p_t = [1/4, 3/4]; s/T = [0, 0] -> p_s = [1/2, 1/2]
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2 * LN3]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kd_loss(s, t, 2.0).item() == pytest.approx(4 * kl, abs=1e-6)


def test_kd_scales_like_t_squared():
    # kd(s, t, T) = T^2 * KL at temperature 1 of the logits divided by T
    torch.manual_seed(1)
    s, t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for temp in (2.0, 10.0):
        assert kd_loss(s, t, temp).item() == pytest.approx(temp**2 * kd_loss(s / temp, t / temp, 1.0).item(), 1e-12)


# ------------------------------------------------------------------ InfoMax


def test_infomax_2x2_hand_values():
    eye = torch.eye(2)
    # aligned: S = I -> -(1) + log(mean(e^0, e^0)) = -1; the temperature divides S
    assert infomax_dv(eye, eye, 1.0).item() == pytest.approx(-1.0, abs=1e-6)
    assert infomax_dv(eye, eye, 0.5).item() == pytest.approx(-2.0, abs=1e-6)
    # swapped: S = [[0, 1], [1, 0]] -> -(0) + log(mean(e, e)) = 1
    assert infomax_dv(eye, eye.flip(0), 1.0).item() == pytest.approx(1.0, abs=1e-6)


def test_infomax_3x3_hand_value():
    # u = I, so S_ij = c_j[i]; c = [(1,1,0)/sqrt2, (0,1,0), (0,0,1)]
    r = 1 / math.sqrt(2)
    c = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # diagonal: r, 1, 1; off-diagonal: one r, five 0
    for temp in (1.0, 0.5):
        want = -(2 + r) / 3 / temp + math.log((5 + math.exp(r / temp)) / 6)
        assert infomax_dv(torch.eye(3), c, temp).item() == pytest.approx(want, abs=1e-6)


def test_infomax_aligned_beats_shuffled_and_ignores_scale():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    y = x + 0.1 * torch.randn(16, 8)
    aligned = infomax_dv(x, y, 0.1)
    shuffled = infomax_dv(x, y[torch.roll(torch.arange(16), 1)], 0.1)
    assert aligned.item() < shuffled.item()
    assert infomax_dv(3.0 * x, 0.25 * y, 0.1).item() == pytest.approx(aligned.item(), abs=1e-5)


def test_infomax_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        infomax_dv(torch.randn(1, 4), torch.randn(1, 4), 0.1)
    with pytest.raises(ValueError):
        infomax_dv(torch.randn(3, 4), torch.randn(3, 5), 0.1)


def test_projector_shapes():
    p = InfoMaxProjector(12, 5)
    assert p(torch.randn(4, 12)).shape == (4, 5)
    assert isinstance(p.net[1], torch.nn.BatchNorm1d)


# ------------------------------------------------------------------ InfoMin


def test_infomin_batch_zero_for_standard_moments():
    torch.manual_seed(0)
    x = torch.randn(9, 6, dtype=torch.float64) * 3 + 2
    z = (x - x.mean(0)) / x.std(0, unbiased=False)  # biased variance exactly 1
    assert abs(infomin_batch_kl(z).item()) < 1e-6
    assert abs(infomin_batch_kl(z.float()).item()) < 1e-6
    assert infomin_batch_kl(x).item() > 0
    # the unbiased estimator would not give zero here: the penalty uses the biased (1/B) variance
    z_unbiased = (x - x.mean(0)) / x.std(0, unbiased=True)
    assert infomin_batch_kl(z_unbiased).item() > 1e-3


def test_infomin_batch_hand_value():
    # columns: [-1, 1] (mu 0, var 1: KL 0), [1, 3] (mu 2, var 1: KL 2), [-2, 2] (mu 0, var 4: KL (3 - ln 4) / 2)
    z = torch.tensor([[-1.0, 1.0, -2.0], [1.0, 3.0, 2.0]])
    want = (0.0 + 2.0 + 0.5 * (3 - math.log(4))) / 3
    assert infomin_batch_kl(z).item() == pytest.approx(want, abs=1e-5)


def test_infomin_batch_per_task():
    torch.manual_seed(0)
    z = torch.randn(8, 3, 5)
    per_task = infomin_batch_kl(z)
    assert per_task.shape == (3,)
    for i in range(3):
        assert per_task[i].item() == pytest.approx(infomin_batch_kl(z[:, i]).item(), 1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        infomin_batch_kl(torch.randn(1, 4))


def test_vib_kl_zero_and_hand_value():
    assert vib_kl(torch.zeros(4, 3), torch.zeros(4, 3)).item() == 0.0
    # sample 0: mu = [1, 0], logvar = [0, ln 2] -> dims KL 0.5 and (2 - ln 2 - 1) / 2; sample 1: zero
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, LN2], [0.0, 0.0]])
    want = ((0.5 + 0.5 * (1 - LN2)) / 2 + 0.0) / 2
    assert vib_kl(mu, logvar).item() == pytest.approx(want, abs=1e-6)
    per_task = vib_kl(torch.stack([mu, torch.zeros_like(mu)], 1), torch.stack([logvar, torch.zeros_like(mu)], 1))
    assert per_task.shape == (2,)
    assert per_task.tolist() == pytest.approx([want, 0.0], abs=1e-6)


# ------------------------------------------------------------------ config and objectives


def test_config_defaults_json_and_validation():
    cfg = IMBConfig()
    d = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert IMBConfig(**d) == cfg and d["infomin"] == "batch" and d["beta"] == 1e-3
    for bad in (
        {"label_smoothing": 1.0},
        {"beta": -1.0},
        {"kd_temperature": 0.0},
        {"infomax_temperature": -0.1},
        {"lambda_feat": float("nan")},
        {"infomin": "nope"},
        {"task_weight": "1"},
    ):
        with pytest.raises(ValueError):
            IMBConfig(**bad)


TASKS = {"shape": 3, "scale": 6}
B, C = 8, 16
T_WIDTHS, CKN_WIDTHS = [8, 12, 20], [4, 6, C]


def _inputs(seed: int = 0, variational: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, requires_grad=True)

    inputs = {
        "logits": {k: rand(B, n) for k, n in TASKS.items()},
        "aux_logits": {k: rand(B, n) for k, n in TASKS.items()},
        "targets": torch.stack([torch.randint(0, n, (B,), generator=g) for n in TASKS.values()], 1),
        "teacher_logits": {k: torch.randn(B, n, generator=g) for k, n in TASKS.items()},
        "ckn_features": [rand(B, w) for w in CKN_WIDTHS],
        "teacher_features": [torch.randn(B, w, generator=g) for w in T_WIDTHS],
        "task_features": rand(B, len(TASKS), C),
    }
    if variational:
        inputs["mu"], inputs["logvar"] = rand(B, len(TASKS), C), rand(B, len(TASKS), C)
    return inputs


@pytest.mark.parametrize("mode", ["batch", "vib"])
def test_imb_total_is_weighted_sum_and_gradients_flow(mode):
    cfg = IMBConfig(task_weight=0.5, lambda_kd=0.3, lambda_feat=2.0, beta=0.7, infomin=mode)
    obj = IMBObjective(T_WIDTHS, CKN_WIDTHS, cfg)
    inputs = _inputs(variational=mode == "vib")
    total, terms = obj(**inputs)
    assert set(terms) == {"ce", "aux_ce", "kd", "infomax", "infomin", "total"}
    assert all(not v.requires_grad and v.ndim == 0 for v in terms.values())
    want = terms["ce"] + 0.5 * terms["aux_ce"] + 0.3 * terms["kd"] + 2.0 * terms["infomax"] + 0.7 * terms["infomin"]
    assert total.item() == pytest.approx(want.item(), 1e-6) and terms["total"].item() == total.item()
    # the terms are the helpers' values: task means, stage mean, task sum
    lg, y = inputs["logits"], inputs["targets"]
    ce = sum(label_smoothed_ce(lg[k], y[:, i], 0.1) for i, k in enumerate(TASKS)) / 2
    kd = sum(kd_loss(lg[k], inputs["teacher_logits"][k], 10.0) for k in TASKS) / 2
    assert terms["ce"].item() == pytest.approx(ce.item(), 1e-6) and terms["kd"].item() == pytest.approx(kd.item(), 1e-6)
    z = infomin_batch_kl(inputs["task_features"]) if mode == "batch" else vib_kl(inputs["mu"], inputs["logvar"])
    assert terms["infomin"].item() == pytest.approx(z.sum().item(), 1e-6)

    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projectors.parameters())
    leaves = [*inputs["logits"].values(), *inputs["aux_logits"].values(), *inputs["ckn_features"]]
    leaves += [inputs["task_features"]] if mode == "batch" else [inputs["mu"], inputs["logvar"]]
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in leaves)


def test_imb_errors():
    obj = IMBObjective(T_WIDTHS, CKN_WIDTHS, IMBConfig(infomin="vib"))
    with pytest.raises(ValueError, match="mu"):
        obj(**_inputs())
    batch_obj = IMBObjective(T_WIDTHS, CKN_WIDTHS, IMBConfig())
    bad = _inputs()
    bad["targets"] = bad["targets"][:, :1]
    with pytest.raises(ValueError, match="targets"):
        batch_obj(**bad)
    bad = _inputs()
    bad["task_features"] = bad["task_features"][:, :1]
    with pytest.raises(ValueError, match="task_features"):
        batch_obj(**bad)
    bad = _inputs()
    del bad["aux_logits"]["scale"]
    with pytest.raises(ValueError, match="aux_logits"):
        batch_obj(**bad)
    with pytest.raises(ValueError):
        IMBObjective([8, 12], CKN_WIDTHS, IMBConfig())
    with pytest.raises(ValueError):
        IMBObjective(T_WIDTHS, CKN_WIDTHS, IMBConfig(beta=-1))


def test_distillation_and_multitask_ce():
    inputs = _inputs()
    lg, y, t = inputs["logits"], inputs["targets"], inputs["teacher_logits"]
    total, terms = distillation_objective(lg, y, t, label_smoothing=0.1, lambda_kd=0.5, temperature=4.0)
    ce = sum(label_smoothed_ce(lg[k], y[:, i], 0.1) for i, k in enumerate(TASKS)) / 2
    kd = sum(kd_loss(lg[k], t[k], 4.0) for k in TASKS) / 2
    assert total.item() == pytest.approx((ce + 0.5 * kd).item(), 1e-6)
    assert set(terms) == {"ce", "kd", "total"}
    plain = sum(F.cross_entropy(lg[k], y[:, i]) for i, k in enumerate(TASKS)) / 2
    assert multitask_ce(lg, y).item() == pytest.approx(plain.item(), 1e-6)


def test_dtypes_float64_kept_half_upcast():
    x = torch.randn(4, 3, dtype=torch.float64)
    assert infomax_dv(x, x, 0.1).dtype == torch.float64 and infomin_batch_kl(x).dtype == torch.float64
    h = torch.randn(4, 3).bfloat16()
    out = kd_loss(h, h.flip(0), 10.0)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert label_smoothed_ce(h, torch.tensor([0, 1, 2, 0])).dtype == torch.float32


def test_the_frozen_ckn_objective_is_the_imb_objective_minus_infomax() -> None:
    """Growing a bank: CE + task_weight * aux CE (+ lambda_kd * KD with a teacher) + beta * InfoMin of one factor,
    nothing trainable of its own, and the same terms as the factorization objective computes."""
    torch.manual_seed(0)
    config = IMBConfig(task_weight=0.5, lambda_kd=2.0, kd_temperature=4.0, lambda_feat=3.0, beta=0.1)
    objective = IMBObjective.frozen_ckn(config)
    assert list(objective.parameters()) == []
    logits, aux, teacher = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    labels, z = torch.randint(0, 3, (6, 1)), torch.randn(6, 1, 4)
    common = dict(logits={"t": logits}, aux_logits={"t": aux}, targets=labels, ckn_features=[], teacher_features=[],
                  task_features=z)
    total, terms = objective(teacher_logits=None, **common)
    ce, aux_ce = label_smoothed_ce(logits, labels[:, 0], 0.1), label_smoothed_ce(aux, labels[:, 0], 0.1)
    infomin = infomin_batch_kl(z[:, 0])
    assert torch.allclose(total, ce + 0.5 * aux_ce + 0.1 * infomin)
    assert float(terms["kd"]) == 0.0 and float(terms["infomax"]) == 0.0
    with_teacher, _ = objective(teacher_logits={"t": teacher}, **common)
    assert torch.allclose(with_teacher, total + 2.0 * kd_loss(logits, teacher, 4.0))
    factorization = IMBObjective([4], [4], config)
    with pytest.raises(InvalidArgumentError, match="needs the teacher's logits"):
        factorization(teacher_logits=None, **{**common, "ckn_features": [torch.randn(6, 4)],
                                              "teacher_features": [torch.randn(6, 4)]})
