"""Evaluation of a knowledge factorization: teacher, KD baseline, every factor and the assembled network.

The library side of ``train/evaluate.py``, written as plain functions that tests call in-process::

    results = evaluate(teacher, student, bank, dataset)   # dict, JSON-friendly (None off the main process)
    paths = write_report(results, "runs/evaluation")      # results.json, results.md, *.png
    update_bank("path/to/bank", results, "runs/evaluation")  # factors.json metrics + README + evaluation/

What is measured, on the held-out split given (``dataset``, any object with ``__len__``,
``__getitem__ -> (image [C,H,W] in [0,1], targets int64 [T])``, ``.tasks`` and ``.input_spec``):

- per-task accuracy of the teacher, the KD student, each factor network (``FactorNetwork``: CKN + one TSN,
  run on its own) and the assembled network (CKN once + all TSNs stacked);
- one-vs-rest teachers (Fashion-MNIST): a teacher that is one K-way classifier is scored on task i as
  "is the K-way argmax == i" (its own one-vs-rest accuracy, the reference the factors are held to); the
  binary-logit reading (p_i > 0.5) is recorded too. Also the K-way accuracy of teacher and KD student, and
  the K-way accuracy of the argmax over the assembled factors' positive-class probabilities (no fine-tuning);
- exactness: per task, the max abs difference between the factor network's logits and the assembled
  network's logits (~1e-6: assembly is exact by design);
- disentanglement (DCI, MIG, SAP; estimators in ``kf_model.metrics``) of the task representations against
  the ground-truth task labels. The TSN representation is the concatenation of every TSN's pooled encoder
  feature (``TSNStack.pooled_features``: [B, k, s] -> [B, k*s]), i.e. what each TSN computes before its
  bias-free projection W_i; z_i = W_i f_i is a linear image of it, so a linear probe on z_i can decode no
  more than on f_i. The teacher's and the KD student's representation is their penultimate feature (pooled
  last stage, the input of their heads);
- leakage: a linear probe decoding task j from TSN i's features (train/held-out split of the probe
  samples), next to chance (majority class of the held-out part), and the same probe on the teacher's (and
  KD student's) features. Headline: mean off-diagonal excess over chance of the TSN probes vs the mean
  excess of the same probes on teacher features (each task j weighs the same in both means);
- parameter accounting (n*s + S vs 2^n*S vs the teacher) and the issue's targets as booleans.

Multi-process runs (``accelerate launch``): the dataloader is ``accelerator.prepare``-d and every batch is
``gather_for_metrics``-ed, with the dataset index of every sample, so each sample counts exactly once
(``results["samples"]["each_counted_once"]`` checks it). Metrics are computed and files written on the
main process only.

One module a job: ``collect`` (outputs of every model, one pass), ``scores`` (metrics, targets, ``evaluate``),
``report`` (results.json, results.md, figures), ``bank_update`` (the evaluated bank's manifest, card, report).
"""

from kf_model.evaluation.bank_update import (
    update_bank,
)
from kf_model.evaluation.collect import (
    IndexedDataset,
    collect_outputs,
)
from kf_model.evaluation.report import (
    write_report,
)
from kf_model.evaluation.scores import (
    evaluate,
)

__all__ = [
    "IndexedDataset", "collect_outputs", "evaluate", "update_bank", "write_report",
]
