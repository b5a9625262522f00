"""Sections 4 and 6 of the benchmark: a factorization step against the KD baseline, and the data loader."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kf_model.bench.banks import (
    BenchBank,
    build_training,
    parse_job_args,
    recipe_config,
    training_loader,
)
from kf_model.bench.settings import (
    HEADROOM,
    Row,
    check_target,
    timed_rows,
)
from kf_model.bench.timing import gc_paused, interleaved

if TYPE_CHECKING:
    from kf_model.bench.runner import Bench


def training(bench: Bench, bank: BenchBank, work: Path) -> None:
    from kf_model.bank import save_module
    from kf_model.errors import KFError
    from kf_model.training import DataConfig, DistillJob, FactorizeJob, LoaderConfig
    from kf_model.utils import count_parameters

    s, device = bench.settings, bench.device
    teacher_dir = work / f"{bank.key}-teacher"
    save_module(bank.teacher.to("cpu"), teacher_dir)
    common = ["--teacher", str(teacher_dir), "--output-dir", str(work / f"{bank.key}-out")]
    kf = build_training(FactorizeJob, ["--config", str(bank.factorize_config), *common], bank.info, device,
                        s.train_batch)
    distill_config = recipe_config(bank.dataset, "distill")
    distill_argv = (["--config", str(distill_config)] if distill_config.is_file() else []) + [
        "--match-factorization", str(bank.factorize_config), *common]
    kd = build_training(DistillJob, distill_argv, bank.info, device, s.train_batch)
    batch = kf.batch_size

    # the same batch for both steps: from the training loader when the dataset is installed
    loader = None
    try:
        args = parse_job_args(FactorizeJob, ["--config", str(bank.factorize_config), *common])
        _, loader = training_loader(DataConfig.from_args(args), LoaderConfig.from_args(args, batch_size=batch))
        images, targets = next(iter(loader))
        source = "a batch of the training loader"
    except (KFError, OSError) as error:
        spec = bank.info.input_spec
        images = torch.rand(batch, spec.channels, spec.size, spec.size)
        targets = torch.stack([torch.randint(t.num_classes, (batch,)) for t in bank.info.tasks], dim=1)
        source = f"random images (dataset not available: {type(error).__name__})"
    images, targets = images.to(device.device), targets.to(device.device)
    times = interleaved({"kf": kf.step_fn(images, targets, device), "kd": kd.step_fn(images, targets, device)},
                        s.train_repeats, s.warmup, device.wall())  # next to a loader timed by the wall clock
    kd_params = count_parameters(kd.model)
    kf_params = count_parameters(kf.model)
    bench.add(timed_rows(4, bank.key, f"KF training step vs KD-baseline step, batch {batch}", times["kf"],
                        times["kd"], baseline_name="KD step", batch=batch, throughput=False,
                        target="ratio <= 2.0",
                        note=f"{source}; CKN+TSNs {kf_params:,} params, KD student {kd_params:,} (width "
                             f"{kd.job.width}), teacher {count_parameters(kf.job.teacher):,}"))
    step_images_per_s = batch / statistics.median(times["kf"])

    if bank.dataset == "dsprites" and loader is not None:
        iterator = iter(loader)
        for _ in range(s.warmup):
            next(iterator)
        loads = []
        with gc_paused():
            for _ in range(s.loader_batches):
                start = time.perf_counter()
                next(iterator)
                loads.append(time.perf_counter() - start)
        loader_rate = batch / statistics.median(loads)
        row = Row(6, f"dSprites training loader vs KF step consumption, batch {batch}", bank.key, loader_rate,
                  "img/s", step_images_per_s, f"KF step ({device.device.type})", loader_rate / step_images_per_s,
                  HEADROOM, "ratio >= 1",
                  note=f"num_workers={loader.num_workers} (the configuration's); loading takes "
                       f"{100 * step_images_per_s / (loader_rate + step_images_per_s):.0f}% of a step's time "
                       "when done in the training process")
        bench.add(check_target(row))
    bank.teacher.to(device.device)
