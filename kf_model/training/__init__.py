"""The Accelerate training loop shared by the three scripts in ``train/``.

    python train/train_teacher.py --config train/configs/dsprites_teacher.json --output-dir runs/dsprites/teacher
    accelerate launch train/factorize.py --config ... --teacher runs/dsprites/teacher --output-dir runs/dsprites/bank

One loop (:func:`fit`) trains any :class:`Job`; a job says what differs between the scripts: the networks,
the loss, the quick validation and what is written at the end.

- :class:`TeacherJob`: the multi-task teacher (one head per task, or one K-way classifier read as K
  one-vs-rest tasks).
- :class:`DistillJob`: the paper's multi-task KD baseline: one student (as many parameters as CKN + all TSNs)
  distilled from the frozen teacher.
- :class:`FactorizeJob`: knowledge factorization: CKN + one TSN per task, trained with the IMB objective
  from the frozen teacher, saved as a :class:`~kf_model.bank.FactorBank`.

Reproducibility: on a given machine a run is a function of its arguments (up to the GPU's non-deterministic
kernels, if any). The data order of epoch e is a permutation
seeded by (seed, e) (:class:`EpochShuffleSampler`), the step counter and the LR schedule are checkpointed
with the model, the optimizer and every RNG (``Accelerator.save_state``), and a resumed run skips the
batches it had already consumed in the current epoch. Kill-and-resume therefore ends with the same weights
as an uninterrupted run (tests/test_training.py checks it). Checkpoints are written aside and renamed into
place when complete (:mod:`kf_model.training.checkpoints`), so even a kill during a save loses only that save.

Options come from flags or from a ``--config`` JSON file; both pass the same argparse types, choices and
ranges (:func:`config_values`, :func:`ranged`). :func:`run` turns the parsed flags into the job's config
(``Job.config_class``: :class:`TeacherJobConfig`, :class:`DistillJobConfig`, :class:`FactorizeJobConfig`, frozen
dataclasses that check themselves) and :func:`fit` trains from that config alone.

Modules: ``options`` (flags and config files), ``config`` (the configs), ``data``, ``optim``, ``jobs`` (what each
script trains), ``loop`` (:func:`fit`), ``validation``, ``checkpoints``.
"""

from kf_model.training.config import (
    ArchitectureConfig,
    DataConfig,
    DataSourceConfig,
    DistillJobConfig,
    FactorizeJobConfig,
    FactorNetworksConfig,
    JobConfig,
    LoaderConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    TeacherJobConfig,
    TeacherSourceConfig,
)
from kf_model.training.data import DataInfo, load_training_data, make_train_loader, open_data_source
from kf_model.training.jobs import DistillJob, FactorizeJob, Job, TeacherJob, backbone_config, build_factor_networks
from kf_model.training.loop import TRAINING_FILE, cli, fit, read_summary, run
from kf_model.training.optim import build_optimizer, total_steps
from kf_model.training.options import parse_args
from kf_model.training.validation import collect_predictions

__all__ = [
    "TRAINING_FILE", "ArchitectureConfig", "DataConfig", "DataInfo", "DataSourceConfig", "DistillJob",
    "DistillJobConfig", "FactorNetworksConfig", "FactorizeJob", "FactorizeJobConfig", "Job", "JobConfig",
    "LoaderConfig", "OptimizerConfig", "RunConfig", "ScheduleConfig", "TeacherJob", "TeacherJobConfig",
    "TeacherSourceConfig", "backbone_config", "build_factor_networks", "build_optimizer", "cli",
    "collect_predictions", "fit", "load_training_data", "make_train_loader", "open_data_source", "parse_args",
    "read_summary", "run", "total_steps"
]
