"""Metrics of kf: accuracy, linear-probe leakage, quick disentanglement proxies, parameter accounting.

The disentanglement scores here are fast linear-probe proxies used by ``kf_model.evaluation`` on every bank
(seconds on 2,000 samples of 256-d features); they are NOT comparable with published numbers. The metrics as
disentanglement_lib defines them (gradient-boosted-tree DCI, SVM SAP, BetaVAE, FactorVAE, ...) are in
``kf_model.experiments.disentanglement``.

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

One module a job: ``accuracy``, ``probes`` (linear probe, leakage), ``disentangling`` (DCI, MIG, SAP proxies),
``parameters`` (accounting); ``arrays`` holds the conversions they share.
"""

from kf_model.metrics.accuracy import accuracy, one_vs_rest_accuracy_from_multiclass, per_task_accuracy
from kf_model.metrics.arrays import entropy_in_base
from kf_model.metrics.disentangling import (
    discrete_entropy,
    discrete_mutual_information,
    disentanglement_report,
    histogram_discretize,
    linear_probe_dci,
    mig,
    single_dim_accuracy,
)
from kf_model.metrics.parameters import assembled_parameters, parameter_accounting
from kf_model.metrics.probes import fit_linear_probe, leakage_matrix

__all__ = [
    "accuracy", "assembled_parameters", "discrete_entropy", "discrete_mutual_information", "disentanglement_report",
    "entropy_in_base", "fit_linear_probe", "histogram_discretize", "leakage_matrix", "linear_probe_dci", "mig",
    "one_vs_rest_accuracy_from_multiclass", "parameter_accounting", "per_task_accuracy", "single_dim_accuracy"
]
