"""Section 8 of the benchmark: a timm teacher and CKN at 224 px (inference, a training step, JPEG loading)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from kf_model.bench.banks import (
    build_training,
)
from kf_model.bench.settings import (
    HEADROOM,
    SEPARATE_TASKS,
    Row,
    check_target,
    timed_rows,
)
from kf_model.bench.timing import interleaved
from kf_model.bench.workloads import (
    forward_flops,
    passes_note,
    write_jpeg_folder,
)
from kf_model.models.factor import AssembledNetwork
from kf_model.models.folded import fold_for_inference
from kf_model.models.passes import in_passes

if TYPE_CHECKING:
    from kf_model.bench.runner import Bench


class RealSize(NamedTuple):
    """The real-size networks the section times: the teacher, the bank factorized from it, the two training jobs."""

    label: str
    spec: Any
    tasks: list
    kf: Any
    kd: Any
    teacher: torch.nn.Module
    bank: Any
    params: str


def real_size(bench: Bench, work: Path) -> None:
    """A timm ResNet-50-class teacher at 224 px, factorized into a ResNet-18-class CKN + 10 TSNs (untrained
    weights: speed does not depend on them): sections 1, 2, 4 and 6 at a real size, images from JPEGs."""
    real = _real_networks(bench, work)
    if bench.wants("real-size"):
        _real_inference(bench, real)
        _real_training(bench, real, work)
    if bench.wants("runtime") and not bench.device.cuda:  # section 9's 224-px int8 rows
        from kf_model.bench.sections_runtime import real_int8

        real_int8(bench, real.label, real.bank, work)


def _real_networks(bench: Bench, work: Path) -> RealSize:
    """A timm teacher folder (random weights), its factorization and KD jobs built for one step, the bank."""
    from kf_model.data import FASHION_MNIST_TASKS
    from kf_model.data.specs import InputSpec
    from kf_model.teachers import TeacherFolderConfig, save_teacher_folder
    from kf_model.teachers.timm_teacher import create_timm_model
    from kf_model.training import DataInfo, DistillJob, FactorizeJob
    from kf_model.utils import count_parameters

    s, device = bench.settings, bench.device
    size, batch = s.real_size, s.real_batch
    spec = InputSpec(channels=3, size=size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    tasks = list(FASHION_MNIST_TASKS)  # 10 one-vs-rest tasks: the shape of any 10-class problem
    info = DataInfo("synthetic-224", tasks, spec, True)
    torch.manual_seed(0)
    teacher_dir = save_teacher_folder(create_timm_model(s.real_teacher, len(tasks), 3, "bench teacher"),
                                      work / "real-teacher", TeacherFolderConfig(
                                          s.real_teacher, len(tasks), spec, [t.labels[1] for t in tasks]))
    common = ["--teacher", str(teacher_dir), "--output-dir", str(work / "real-out")]
    factorize = ["--ckn-arch", f"timm:{s.real_ckn}", "--init-ckn-from-teacher",
                 "--tsn-widths", "16", "32", "64", "--tsn-strides", "4", "2", "2", *common]
    kf = build_training(FactorizeJob, factorize, info, device, batch)
    kd = build_training(DistillJob, ["--arch", f"timm:{s.real_ckn}", "--width", "1", *common], info, device, batch)
    teacher = kf.job.teacher.to(device.device).eval()
    ckn, tsns = kf.model.ckn, kf.model.tsns.unstack()
    from kf_model.bank import FactorBank

    bank = FactorBank.from_modules(ckn.to("cpu"), tsns, input_spec=spec).to(device.device)
    label = f"{s.real_teacher}->{s.real_ckn} @{size}"
    params = (f"teacher {count_parameters(teacher):,}, CKN {count_parameters(bank.ckn):,}, "
              f"10 TSNs {sum(count_parameters(t) for t in bank.tsns.values()):,} params")
    return RealSize(label, spec, tasks, kf, kd, teacher, bank, params)


def _real_inference(bench: Bench, real: RealSize) -> None:
    """Assembled vs teacher (batch 1 and a throughput batch), assembled vs separate factor networks."""
    s, device = bench.settings, bench.device
    size, batch = s.real_size, s.real_batch
    label, tasks, teacher, bank, params = real.label, real.tasks, real.teacher, real.bank, real.params
    x1 = torch.rand(1, 3, size, size).to(device.device)
    assembled = bank.assemble()
    plain = AssembledNetwork(bank.ckn, list(bank.tsns.values())).eval()  # unfolded, as the teacher it is divided by
    flop_ratio = forward_flops(plain, x1) / forward_flops(teacher, x1)
    bench.checks.setdefault("assembled_vs_teacher_flop_ratio", {})[label] = round(flop_ratio, 4)
    limit = max(1.15, flop_ratio + 0.05)
    folded_teacher = fold_for_inference(teacher).eval()  # the CKN's rewrites: BatchNorm folded, and passes
    for b, throughput in ((1, False), (batch, True)):
        x = torch.rand(b, 3, size, size).to(device.device)
        times = interleaved({"assembled": bench.inference(lambda x=x: assembled(x)),
                             "folded teacher": bench.inference(lambda x=x: in_passes(folded_teacher, x)),
                             "teacher": bench.inference(lambda x=x: teacher(x))}, s.real_repeats, s.warmup, device)
        what = f"batch {b} throughput" if throughput else "batch 1 latency"
        bench.add(timed_rows(8, label, f"assembled (10 tasks) vs teacher with the same BatchNorm folding and passes, "
                                       f"{what}", times["assembled"], times["folded teacher"],
                            baseline_name="teacher, BatchNorm folded, passes",
                            batch=b, throughput=throughput, target=f"ratio <= {limit:.2f}",
                            note=f"FLOP ratio {flop_ratio:.3f}; {params}; "
                                 f"{passes_note(folded_teacher, assembled, x)}"))
        bench.add(timed_rows(8, label, f"assembled (10 tasks) vs plain teacher (unfair: BatchNorm unfolded, one "
                                       f"pass), {what}", times["assembled"], times["teacher"],
                            baseline_name="plain teacher", batch=b, throughput=throughput,
                            note="untargeted: the teacher as trained"))
    for n in SEPARATE_TASKS:
        chosen = [t.name for t in tasks[:n]]
        network = bank.assemble(chosen)
        factors = [fold_for_inference(bank.factor(name)).eval() for name in chosen]  # each folded like the CKN
        times = interleaved({"assembled": bench.inference(lambda x=x1, net=network: net(x)),
                             "separate": bench.inference(lambda x=x1, fs=factors: [f(x) for f in fs])},
                            s.real_repeats, s.warmup, device)
        bench.add(timed_rows(8, label, f"assembled vs {n} separate factor networks, batch 1 latency",
                            times["assembled"], times["separate"], baseline_name=f"{n} factor networks, folded",
                            batch=1, throughput=False, target="ratio <= 0.5"))


def _real_training(bench: Bench, real: RealSize, work: Path) -> None:
    """A KF training step vs a KD-baseline step, and the JPEG loader against what the KF step consumes."""
    from kf_model.data import open_dataset
    from kf_model.utils import count_parameters

    s, device = bench.settings, bench.device
    size, batch = s.real_size, s.real_batch
    label, spec, tasks, kf, kd, params = real.label, real.spec, real.tasks, real.kf, real.kd, real.params
    folder = write_jpeg_folder(work / "real-jpegs", [t.labels[1] for t in tasks], per_class=max(batch, 4))
    dataset = open_dataset(folder, "train", input_spec=spec, val_fraction=0.0, test_fraction=0.0)
    workers = min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         pin_memory=device.cuda, persistent_workers=workers > 0)
    images, targets = next(iter(loader))
    images, targets = images.to(device.device), targets.to(device.device)
    times = interleaved({"kf": kf.step_fn(images, targets, device), "kd": kd.step_fn(images, targets, device)},
                        s.real_repeats, s.warmup, device.wall())  # next to a loader timed by the wall clock
    bench.add(timed_rows(8, label, f"KF training step vs KD-baseline step, batch {batch}", times["kf"],
                        times["kd"], baseline_name="KD step", batch=batch, throughput=False,
                        target="ratio <= 1.3",
                        note=f"KD student timm:{s.real_ckn} {count_parameters(kd.model):,} params; {params}"))
    step_rate = batch / statistics.median(times["kf"])
    loads, iterator = [], iter(loader)
    for _ in range(max(s.loader_batches, 3)):
        start = time.perf_counter()
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(loader)
            next(iterator)
        loads.append(time.perf_counter() - start)
    loader_rate = batch / statistics.median(loads[1:])
    bench.add(check_target(Row(8, f"JPEG image-folder loader vs KF step consumption, batch {batch}", label,
                              loader_rate, "img/s", step_rate, f"KF step ({device.device.type})",
                              loader_rate / step_rate, HEADROOM, "ratio >= 1",
                              note=f"{len(dataset)} JPEGs of 320x240 decoded and resized to {size} px, "
                                   f"num_workers={workers}")))
