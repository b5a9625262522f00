"""Side-by-side performance ratios of kf: ``python -m kf_model.bench`` (``make bench``).

    python -m kf_model.bench [--device cpu|cuda|auto] [--quick] [--banks DIR ...] [--out FILE] [--skip-serving]
                             [--skip-real-size] [--threads N]

Eight sections, each a measured figure next to its baseline, measured in the same run on the same machine:

1. the assembled network (CKN + all TSNs) vs the teacher: latency at batch 1, throughput at batch 256, with
   the FLOP ratio of the two (torch's FlopCounterMode): the target is 1.15, or the FLOP ratio + 0.05 if higher;
2. the assembled network vs each task's factor network run separately (k CKN passes), at 5 and 10 tasks;
3. 10 TSNs as one ``TSNStack`` (grouped convolutions, BatchNorm folded at inference) vs a Python loop over
   the 10 TSNs, plus the alternatives that were tried (channels_last, ``torch.func.vmap``, BN not folded,
   the stack before issue 6); all must agree with the loop within 1e-5 (asserted, in float32). Timed at batch
   1, 16, 64, 128 and 256 (target <= 1.0 each): the stack picks grouped kernels or a per-task pass by size;
4. one knowledge-factorization training step vs one KD-baseline step on the same batch, both built by
   :mod:`kf_model.training` (``FactorizeJob`` / ``DistillJob``: networks, objective, optimizer);
5. the app (``python app.py`` in a subprocess, both banks): ``/predict`` p50/p95 through ``gradio_client`` and
   through one kept-alive HTTP connection vs the same prediction in-process; cold start (process start to the
   first answer) vs a process that only imports the app; the app's peak RSS (VmHWM, target <= 1.5 GB);
6. the dSprites training loader (built as ``fit`` builds it) in images/s vs the KF step's images/s;
7. the assembled network exported to ONNX (``FactorBank.export_onnx``) run by onnxruntime vs torch, CPU;
8. real size: a timm ResNet-50 teacher at 224 px factorized into a timm ResNet-18 CKN + 10 TSNs (untrained):
   sections 1, 2 and 4 again (KF step target <= 1.3 x KD step), and a loader over 320x240 JPEGs on disk
   (``open_dataset`` image folder, DataLoader workers) vs the KF step's images/s. ``--quick`` uses timm's
   ``test_resnet`` at 64 px instead.

Method: the sides of a ratio are timed alternately after a warm-up (two sides swap their order every repeat,
more run in a seeded random order), with the garbage collector paused, and their medians are compared: load
changes hit both sides, so the ratios hold on a busy machine while the absolute figures do not. On CUDA each
call is bracketed by ``torch.cuda.synchronize()`` and runs under bf16 autocast (fp16 where the GPU lacks
bf16, as in the app); the equality checks of section 3 run in float32 with TF32 off. On the CPU torch uses
``--threads`` threads (default 1, the app's ``KF_TORCH_THREADS`` default): these small networks gain little
from more, and one thread keeps a shared machine's load from leaking into one side of a ratio.

Banks: a ``--banks`` folder that holds a factor bank is loaded; its teacher's architecture comes from the
manifest's teacher summary and its training configuration from the manifest, else from ``train/configs``.
A missing folder named after a dataset gets an untrained bank and teacher built from the recipe
(``train/configs/<dataset>_*.json``): speed does not depend on the weights. The training step uses a batch of
the real training loader when the dataset is installed, random images of the right shape otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import io
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "train" / "configs"
EXAMPLES_DIR = ROOT / "assets" / "examples"
DEFAULT_BANKS = ("assets/factors/dsprites", "assets/factors/fashion-mnist")
DEFAULT_OUT = "runs/bench.json"
STACK_TASKS = 10  # section 3
STACK_BATCHES = (16, 64, 128)  # section 3 also times these batch sizes (below the throughput batch)
SEPARATE_TASKS = (5, 10)  # section 2
EQUALITY_ATOL = 1e-5
MEMORY_LIMIT_MB = 1536.0  # 1.5 GB: the app with both banks loaded
SERVER_START_TIMEOUT_S = 240.0
FORMAT_VERSION = 1


# ============================================================================= settings and results

@dataclass(frozen=True)
class Settings:
    """How much is measured: the full run, or ``--quick`` (a tiny configuration for the test suite)."""

    latency_repeats: int  # batch-1 calls per side
    throughput_batch: int
    throughput_repeats: int
    train_batch: int | None  # None: the training configuration's batch size
    train_repeats: int
    loader_batches: int
    serving_requests: int
    cold_starts: int
    warmup: int
    real_teacher: str = "resnet50"  # section 8: a timm teacher at real size ...
    real_ckn: str = "resnet18"  # ... factorized into a smaller timm CKN
    real_size: int = 224
    real_batch: int = 8  # CPU: small batches (CUDA: --real-batch)
    real_repeats: int = 5


FULL = Settings(latency_repeats=100, throughput_batch=256, throughput_repeats=7, train_batch=None, train_repeats=8,
                loader_batches=30, serving_requests=40, cold_starts=3, warmup=3)
QUICK = Settings(latency_repeats=6, throughput_batch=8, throughput_repeats=2, train_batch=8, train_repeats=2,
                 loader_batches=2, serving_requests=4, cold_starts=1, warmup=1, real_teacher="test_resnet",
                 real_ckn="test_resnet", real_size=64, real_batch=4, real_repeats=2)

COST = "time / baseline time"  # ratio of most rows: lower is better
HEADROOM = "value / baseline"  # section 6: loader images/s over the step's, higher is better


@dataclass
class Row:
    """One line of the table (and of the JSON): a figure, its baseline and their ratio."""

    section: int
    name: str
    bank: str | None
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    ratio_definition: str | None = None
    target: str | None = None  # e.g. "ratio <= 1.5", "value <= 1536"
    passed: bool | None = None
    note: str = ""


def check_target(row: Row) -> Row:
    """Fill ``passed`` from ``target`` ("ratio <= 1.5", "value >= 1", ...)."""
    if row.target:
        what, op, limit = row.target.split()
        figure = row.ratio if what == "ratio" else row.value
        if figure is not None and math.isfinite(figure):
            row.passed = figure <= float(limit) if op == "<=" else figure < float(limit) if op == "<" else \
                figure >= float(limit)
    return row


def timed_rows(section: int, bank: str | None, name: str, times: list[float], base_times: list[float], *,
               baseline_name: str, batch: int, throughput: bool, target: str | None = None,
               note: str = "") -> Row:
    """A row from two interleaved lists of seconds per call: latency in ms, or throughput in images/s."""
    value_s, base_s = statistics.median(times), statistics.median(base_times)
    ratio = value_s / base_s
    if throughput:
        row = Row(section, name, bank, batch / value_s, "img/s", batch / base_s, baseline_name, ratio, COST, target,
                  note=note)
    else:
        row = Row(section, name, bank, 1000 * value_s, "ms", 1000 * base_s, baseline_name, ratio, COST, target,
                  note=note)
    return check_target(row)


# ============================================================================= device and timing

@dataclass
class Device:
    device: torch.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @property
    def half(self) -> torch.dtype:
        from kf_model.serving import autocast_dtype

        return autocast_dtype()

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=self.half) if self.cuda else contextlib.nullcontext()

    @property
    def precision(self) -> str:
        return f"{str(self.half).replace('torch.', '')} autocast" if self.cuda else "float32"

    def describe(self) -> str:
        if self.cuda:
            return f"cuda ({torch.cuda.get_device_name(self.device)}, {self.precision})"
        return f"cpu ({torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() > 1 else ''}, float32)"


def pick_device(name: str) -> Device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return Device(torch.device(name))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def interleaved(sides: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: Device
                ) -> dict[str, list[float]]:
    """Seconds per call of each side, timed alternately after ``warmup`` calls of each.

    Two sides swap their order every repeat; more sides run in a new (seeded) random order every repeat, so
    that no side always follows the same one (a side that runs right after a cache-hungry one is slower).
    """
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    device.sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    shuffle = random.Random(0).shuffle
    with gc_paused():
        for repeat in range(repeats):
            order = list(names) if repeat % 2 == 0 else names[::-1]
            if len(names) > 2:
                shuffle(order)
            for name in order:
                device.sync()
                start = time.perf_counter()
                sides[name]()
                device.sync()
                times[name].append(time.perf_counter() - start)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ============================================================================= banks, teachers, training jobs

@dataclass
class BenchBank:
    """A bank to measure, with its teacher and the configuration its training runs with."""

    key: str  # folder name: "dsprites"
    path: Path
    loaded: bool  # loaded from its folder (else: untrained, built from the recipe)
    bank: Any  # FactorBank
    teacher: nn.Module
    teacher_source: str
    info: Any  # kf_model.training.DataInfo
    factorize_config: Path  # a factorize.py --config file
    factorize_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return self.info.name

    def summary(self) -> dict[str, Any]:
        from kf_model.utils import count_parameters

        weights = "from the bank folder" if self.loaded else "untrained, built from the recipe"
        return {"path": str(self.path), "dataset": self.dataset, "weights": weights,
                "tasks": [t.name for t in self.bank.tasks], "teacher": self.teacher_source,
                "training_config": self.factorize_source, "parameters": {
                    "teacher": count_parameters(self.teacher), **self.bank.parameter_counts()}}


def recipe_config(dataset: str, stage: str) -> Path:
    return CONFIG_DIR / f"{dataset.replace('-', '_')}_{stage}.json"


def dataset_info(dataset: str) -> Any:
    from kf_model.data import DSPRITES_INPUT_SPEC, DSPRITES_TASKS, FASHION_MNIST_INPUT_SPEC, FASHION_MNIST_TASKS
    from kf_model.training import DataInfo

    known = {"dsprites": (DSPRITES_TASKS, DSPRITES_INPUT_SPEC, False),
             "fashion-mnist": (FASHION_MNIST_TASKS, FASHION_MNIST_INPUT_SPEC, True)}
    if dataset not in known:
        raise ValueError(f"{dataset!r} is neither an existing factor bank folder nor a dataset with a recipe "
                         f"({', '.join(known)})")
    tasks, spec, one_vs_rest = known[dataset]
    return DataInfo(dataset, list(tasks), spec, one_vs_rest)


def parse_job_args(job_class: type, argv: list[str]) -> argparse.Namespace:
    from kf_model.training import parse_args

    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            return parse_args(job_class.parser(), argv, required=())
        except SystemExit as error:
            raise ValueError(f"{job_class.__name__} {' '.join(argv)}: {err.getvalue().strip()}") from error


def recipe_teacher(info: Any) -> nn.Module:
    """The teacher of the recipe (``train/configs/<dataset>_teacher.json``), built by ``TeacherJob``."""
    from kf_model.training import TeacherJob

    job = TeacherJob(parse_job_args(TeacherJob, ["--config", str(recipe_config(info.name, "teacher"))]), info)
    job.build()
    return job.model


def load_bench_bank(path_text: str, work: Path) -> BenchBank:
    """A bank folder -> loaded; a missing folder named after a dataset -> an untrained bank from its recipe."""
    from kf_model.bank import MANIFEST_FILE, FactorBank
    from kf_model.models import Teacher
    from kf_model.training import DataInfo, FactorizeJob, FactorNetworksConfig, build_factor_networks

    path = Path(path_text)
    if not path.is_absolute() and not path.exists() and (ROOT / path).exists():
        path = ROOT / path
    key = path.name
    notes: list[str] = []
    if (path / MANIFEST_FILE).is_file():
        bank = FactorBank.from_pretrained(path)
        manifest = bank.manifest
        dataset = manifest.dataset or key
        teacher_summary = manifest.teacher or {}
        one_vs_rest = bool(teacher_summary.get("one_vs_rest")) or dataset == "fashion-mnist"
        info = DataInfo(dataset, list(manifest.tasks), manifest.input_spec, one_vs_rest)
        if isinstance(teacher_summary.get("backbone"), dict):
            teacher = Teacher(teacher_summary["backbone"], [t.to_dict() for t in manifest.tasks], one_vs_rest)
            teacher_source = "architecture from the bank manifest's teacher summary (untrained weights)"
        elif recipe_config(dataset, "teacher").is_file():
            teacher = recipe_teacher(info)
            teacher_source = f"architecture from {recipe_config(dataset, 'teacher').relative_to(ROOT)} (untrained)"
        else:
            ckn_backbone = bank.ckn.init_config["backbone"]
            teacher = Teacher(ckn_backbone, [t.to_dict() for t in manifest.tasks], one_vs_rest)
            teacher_source = "not recorded: the CKN's architecture (untrained weights)"
        training = (manifest.training or {}).get("config")
        factorize_config, factorize_source = recipe_config(dataset, "factorize"), ""
        if isinstance(training, dict):
            candidate = work / f"{key}-factorize.json"
            candidate.write_text(json.dumps({k: v for k, v in training.items() if v is not None}))
            try:
                parse_job_args(FactorizeJob, ["--config", str(candidate)])
                factorize_config, factorize_source = candidate, "the bank manifest's training configuration"
            except ValueError as error:
                notes.append(f"the manifest's training configuration is not usable here ({error}); using the recipe")
        if not factorize_source:
            if not factorize_config.is_file():
                raise ValueError(f"{path}: its manifest records no training configuration and {dataset!r} has no "
                                 "recipe in train/configs/")
            factorize_source = str(factorize_config.relative_to(ROOT))
        return BenchBank(key, path, True, bank, teacher.eval(), teacher_source, info, factorize_config,
                         factorize_source, notes)

    info = dataset_info(key)
    factorize_config = recipe_config(key, "factorize")
    options = parse_job_args(FactorizeJob, ["--config", str(factorize_config)])
    ckn, tsns = build_factor_networks(FactorNetworksConfig.from_args(options), info)
    teacher = recipe_teacher(info)
    bank = FactorBank.from_modules(ckn, tsns, input_spec=info.input_spec, dataset=key, teacher={
        "description": "untrained, built by kf_model.bench from the recipe", "one_vs_rest": info.one_vs_rest,
        "backbone": teacher.init_config["backbone"]})
    notes.append(f"{path_text} does not exist: untrained bank and teacher built from train/configs/"
                 f"{key.replace('-', '_')}_*.json (speed does not depend on the weights)")
    return BenchBank(key, path, False, bank, teacher.eval(),
                     f"architecture from {recipe_config(key, 'teacher').relative_to(ROOT)} (untrained)", info,
                     factorize_config, str(factorize_config.relative_to(ROOT)), notes)


@dataclass
class TrainingSetup:
    """One job's networks, objective and optimizer, as ``kf_model.training.fit`` builds them."""

    job: Any
    model: nn.Module
    objective: nn.Module | None
    optimizer: torch.optim.Optimizer
    batch_size: int

    def step_fn(self, images: Tensor, targets: Tensor, device: Device) -> Callable[[], None]:
        """One optimizer step on this batch: the body of ``fit``'s loop (autocast, loss, backward, step)."""
        job, model, objective, optimizer = self.job, self.model, self.objective, self.optimizer

        def step() -> None:
            with device.autocast():
                loss, _ = job.loss(model, objective, images, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step


def build_training(job_class: type, argv: list[str], info: Any, device: Device,
                   batch_size: int | None) -> TrainingSetup:
    from kf_model.errors import KFError
    from kf_model.training import OptimizerConfig, build_optimizer

    args = parse_job_args(job_class, argv)
    if batch_size is not None:
        args.batch_size = batch_size
    job = job_class(args, info)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            job.build()
        except KFError:  # e.g. a CKN that cannot start from this teacher: speed does not depend on it
            if not getattr(args, "init_ckn_from_teacher", False):
                raise
            args.init_ckn_from_teacher = False
            job.build()
    job.teacher.to(device.device)
    job.model.to(device.device).train()
    if job.objective is not None:
        job.objective.to(device.device).train()
    trainable = [job.model] + ([job.objective] if job.objective is not None else [])
    return TrainingSetup(job, job.model, job.objective, build_optimizer(trainable, OptimizerConfig.from_args(args)),
                         args.batch_size)


def training_loader(args: argparse.Namespace) -> tuple[Any, torch.utils.data.DataLoader]:
    """The training set and its DataLoader, exactly as ``kf_model.training.fit`` builds them."""
    from kf_model import training

    train_set, _, _ = training.load_training_data(training.DataConfig.from_args(args))
    return train_set, training.make_train_loader(train_set, training.LoaderConfig.from_args(args))


# ============================================================================= the benchmark

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = QUICK if args.quick else FULL
        self.device = pick_device(args.device)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.checks: dict[str, Any] = {"tolerance": EQUALITY_ATOL}
        self.banks: list[BenchBank] = []
        self.errors: list[str] = []

    # ------------------------------------------------------------------ helpers
    def guarded(self, label: str, section: Callable[..., None], *args: Any) -> None:
        """Run one section; a failure is reported (and makes the exit status 1) but the other sections still run,
        so that one run on a borrowed machine gives every figure it can."""
        print(label, flush=True)
        try:
            section(*args)
        except Exception as error:
            traceback.print_exc()
            self.errors.append(f"{label}: {type(error).__name__}: {error}")

    def add(self, row: Row) -> None:
        self.rows.append(row)
        status = "" if row.passed is None else " PASS" if row.passed else " FAIL"
        print(f"  [{row.section}] {row.bank or '-'}: {row.name}: {format_value(row.value, row.unit)}"
              + (f" vs {row.baseline_name} {format_value(row.baseline, row.unit)}" if row.baseline is not None else "")
              + (f" -> {row.ratio:.3f}" if row.ratio is not None else "") + status, flush=True)

    def images(self, bank: BenchBank, batch: int) -> Tensor:
        spec = bank.info.input_spec
        generator = torch.Generator().manual_seed(batch)
        return torch.rand(batch, spec.channels, spec.size, spec.size, generator=generator).to(self.device.device)

    def inference(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        device = self.device

        def call() -> Any:
            with torch.inference_mode(), device.autocast():
                return fn()

        return call

    # ------------------------------------------------------------------ 1 and 2
    def section_networks(self, bank: BenchBank) -> None:
        s, device = self.settings, self.device
        bank.bank.to(device.device)
        teacher = bank.teacher.to(device.device).eval()
        assembled = bank.bank.assemble().eval()
        k = len(bank.bank.tasks)
        x = self.images(bank, 1)
        flop_ratio = forward_flops(assembled, x) / forward_flops(teacher, x)
        self.checks.setdefault("assembled_vs_teacher_flop_ratio", {})[bank.key] = round(flop_ratio, 4)
        limit = max(1.15, flop_ratio + 0.05)  # the time cannot beat the arithmetic: target the FLOP ratio + 0.05
        for batch, repeats, throughput in ((1, s.latency_repeats, False),
                                           (s.throughput_batch, s.throughput_repeats, True)):
            x = self.images(bank, batch)
            times = interleaved({"assembled": self.inference(lambda x=x: assembled(x)),
                                 "teacher": self.inference(lambda x=x: teacher(x))}, repeats, s.warmup, device)
            what = f"batch {batch} throughput" if throughput else "batch 1 latency"
            self.add(timed_rows(1, bank.key, f"assembled ({k} tasks) vs teacher, {what}", times["assembled"],
                                times["teacher"], baseline_name="teacher", batch=batch, throughput=throughput,
                                target=f"ratio <= {limit:.2f}", note=f"FLOP ratio {flop_ratio:.3f}"))

        names = [t.name for t in bank.bank.tasks]
        counts = [n for n in SEPARATE_TASKS if n <= len(names)] or [len(names)]
        for n in counts:
            chosen = names[:n]
            network = bank.bank.assemble(chosen).eval()
            factors = [bank.bank.factor(name) for name in chosen]
            for batch, repeats, throughput in ((1, s.latency_repeats, False),
                                               (s.throughput_batch, max(s.throughput_repeats - 2, 2), True)):
                x = self.images(bank, batch)
                times = interleaved({"assembled": self.inference(lambda x=x, net=network: net(x)),
                                     "separate": self.inference(lambda x=x, fs=factors: [f(x) for f in fs])},
                                    repeats, s.warmup, device)
                what = f"batch {batch} throughput" if throughput else "batch 1 latency"
                self.add(timed_rows(2, bank.key, f"assembled vs {n} separate factor networks, {what}",
                                    times["assembled"], times["separate"], baseline_name=f"{n} factor networks",
                                    batch=batch, throughput=throughput, target="ratio <= 0.5"))
        if len(names) < max(SEPARATE_TASKS):
            bank.notes.append(f"section 2 at {counts} task(s) only: the bank has {len(names)} tasks")

    # ------------------------------------------------------------------ 3
    def section_stack(self, bank: BenchBank) -> None:
        from kf_model.data.specs import TaskSpec
        from kf_model.models import TaskSpecificNetwork
        from kf_model.models.stacking import LOOP_FROM_PIXELS, TSNStack

        s, device = self.settings, self.device
        template = next(iter(bank.bank.tsns.values()))
        config = dict(template.init_config)
        torch.manual_seed(0)
        tsns = []
        for i in range(STACK_TASKS):  # binary heads: the same shapes for every TSN, so that vmap applies
            task = TaskSpec(f"task{i}", ("no", "yes"), f"synthetic task {i}")
            tsn = TaskSpecificNetwork(**{**config, "task": task.to_dict()})
            randomize_batchnorm(tsn)
            tsns.append(tsn.eval().to(device.device))
        unfused = TSNStack(tsns).eval()
        stack = TSNStack(tsns).fuse_for_inference()
        stack_cl = copy.deepcopy(stack).to(memory_format=torch.channels_last)
        vmapped = vmapped_tsns(tsns)
        ckn_width = config["ckn_width"]

        def variants(x: Tensor, z: Tensor) -> dict[str, Callable[[], Any]]:
            x_cl = x.contiguous(memory_format=torch.channels_last)
            return {
                "loop": lambda: [t(x, z).logits for t in tsns],
                "stack": lambda: stack(x, z).logits,
                "stack, BN not folded": lambda: unfused(x, z).logits,
                "stack before issue 6 (einsum heads, BN not folded)": lambda: einsum_stack_logits(unfused, x, z),
                "stack, channels_last": lambda: stack_cl(x_cl, z).logits,
                "vmap over the TSNs": lambda: vmapped(x, z),
            }

        # exactness, in float32 (TF32 off on CUDA), at batch 1 and at the throughput batch
        worst: dict[str, float] = {}
        for batch in (1, s.throughput_batch):
            x = self.images(bank, batch)
            z = torch.rand(batch, ckn_width, generator=torch.Generator().manual_seed(1)).to(device.device)
            with torch.inference_mode(), no_tf32():
                outputs = {name: fn() for name, fn in variants(x, z).items()}
            reference = torch.stack(outputs.pop("loop"))
            for name, out in outputs.items():
                out = torch.stack(list(out.values()) if isinstance(out, dict) else list(out))
                worst[name] = max(worst.get(name, 0.0), float((out.float() - reference.float()).abs().max()))
        self.checks.setdefault("stack_vs_loop_max_abs_diff", {})[bank.key] = worst
        bad = {name: diff for name, diff in worst.items() if not diff <= EQUALITY_ATOL}
        assert not bad, f"{bank.key}: TSN stack variants differ from the loop over TSNs by more than 1e-5: {bad}"

        batches = sorted({1, *[b for b in STACK_BATCHES if b < s.throughput_batch], s.throughput_batch})
        for batch in batches:  # the stack picks grouped kernels or a per-task pass by batch size (models/stacking.py)
            throughput = batch > 1
            repeats = s.throughput_repeats if throughput else s.latency_repeats
            x = self.images(bank, batch)
            z = torch.rand(batch, ckn_width, generator=torch.Generator().manual_seed(1)).to(device.device)
            sides = {name: self.inference(fn) for name, fn in variants(x, z).items()}
            if throughput:
                sides = {name: sides[name] for name in ("loop", "stack")}
            times = interleaved(sides, repeats, s.warmup, device)
            what = f"batch {batch} throughput" if throughput else "batch 1 latency"
            path = "per-task pass" if (device.device.type == "cpu" and batch * x.shape[2] * x.shape[3]
                                        >= LOOP_FROM_PIXELS) else "grouped kernels"
            self.add(timed_rows(3, bank.key, f"TSN stack vs loop over {STACK_TASKS} TSNs, {what}", times["stack"],
                                times["loop"], baseline_name="loop", batch=batch, throughput=throughput,
                                target="ratio <= 1.0",
                                note=f"stack runs {path}; max |stack - loop| = {worst['stack']:.1e}"))
            if not throughput:
                for name in list(sides)[2:]:
                    self.add(timed_rows(3, bank.key, f"{name} vs stack as shipped, batch 1 latency", times[name],
                                        times["stack"], baseline_name="stack", batch=1, throughput=False,
                                        note=f"max |{name} - loop| = {worst[name]:.1e}"))

    # ------------------------------------------------------------------ 4 and 6
    def section_training(self, bank: BenchBank, work: Path) -> None:
        from kf_model.bank import save_module
        from kf_model.errors import KFError
        from kf_model.training import DistillJob, FactorizeJob
        from kf_model.utils import count_parameters

        s, device = self.settings, self.device
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
            args.batch_size = batch
            _, loader = training_loader(args)
            images, targets = next(iter(loader))
            source = "a batch of the training loader"
        except (KFError, OSError) as error:
            spec = bank.info.input_spec
            images = torch.rand(batch, spec.channels, spec.size, spec.size)
            targets = torch.stack([torch.randint(t.num_classes, (batch,)) for t in bank.info.tasks], dim=1)
            source = f"random images (dataset not available: {type(error).__name__})"
        images, targets = images.to(device.device), targets.to(device.device)
        times = interleaved({"kf": kf.step_fn(images, targets, device), "kd": kd.step_fn(images, targets, device)},
                            s.train_repeats, s.warmup, device)
        kd_params = count_parameters(kd.model)
        kf_params = count_parameters(kf.model)
        self.add(timed_rows(4, bank.key, f"KF training step vs KD-baseline step, batch {batch}", times["kf"],
                            times["kd"], baseline_name="KD step", batch=batch, throughput=False,
                            target="ratio <= 2.0",
                            note=f"{source}; CKN+TSNs {kf_params:,} params, KD student {kd_params:,} (width "
                                 f"{kd.job.args.width}), teacher {count_parameters(kf.job.teacher):,}"))
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
            self.add(check_target(row))
        bank.teacher.to(device.device)

    # ------------------------------------------------------------------ 7
    def section_onnx(self, bank: BenchBank, work: Path) -> None:
        """onnxruntime on the exported assembled network vs torch, CPU, batch 1 and the throughput batch."""
        import numpy as np
        import onnxruntime

        s = self.settings
        cpu_bank = copy.deepcopy(bank.bank).to("cpu")
        path = cpu_bank.export_onnx(None, work / f"{bank.key}.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = self.args.threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        network = cpu_bank.assemble()
        cpu = Device(torch.device("cpu"))
        for batch, repeats, throughput in ((1, s.latency_repeats, False),
                                           (s.throughput_batch, s.throughput_repeats, True)):
            x = self.images(bank, batch).cpu()
            feed = {"image": x.numpy()}
            reference = network(x)
            worst = max(float(np.abs(out - reference[name].detach().numpy()).max())
                        for name, out in zip([t.name for t in network.tasks], session.run(None, feed)))

            def torch_call(x=x) -> Any:
                with torch.inference_mode():
                    return network(x)

            times = interleaved({"onnx": lambda feed=feed: session.run(None, feed), "torch": torch_call}, repeats,
                                s.warmup, cpu)
            what = f"batch {batch} throughput" if throughput else "batch 1 latency"
            self.add(timed_rows(7, bank.key, f"onnxruntime vs torch (CPU), assembled network, {what}", times["onnx"],
                                times["torch"], baseline_name="torch", batch=batch, throughput=throughput,
                                note=f"max |onnx - torch| = {worst:.1e}"))

    # ------------------------------------------------------------------ 8
    def section_real_size(self, work: Path) -> None:
        """A timm ResNet-50-class teacher at 224 px, factorized into a ResNet-18-class CKN + 10 TSNs (untrained
        weights: speed does not depend on them): sections 1, 2, 4 and 6 at a real size, images from JPEGs."""
        from kf_model.data import FASHION_MNIST_TASKS
        from kf_model.data.specs import InputSpec
        from kf_model.teachers import TeacherFolderConfig, save_teacher_folder
        from kf_model.teachers.timm_teacher import create_timm_model
        from kf_model.training import DataInfo, DistillJob, FactorizeJob
        from kf_model.utils import count_parameters

        s, device = self.settings, self.device
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
        x1 = torch.rand(1, 3, size, size).to(device.device)
        assembled = bank.assemble()
        flop_ratio = forward_flops(assembled, x1) / forward_flops(teacher, x1)
        self.checks.setdefault("assembled_vs_teacher_flop_ratio", {})[label] = round(flop_ratio, 4)
        limit = max(1.15, flop_ratio + 0.05)
        for b, throughput in ((1, False), (batch, True)):
            x = torch.rand(b, 3, size, size).to(device.device)
            times = interleaved({"assembled": self.inference(lambda x=x: assembled(x)),
                                 "teacher": self.inference(lambda x=x: teacher(x))}, s.real_repeats, s.warmup, device)
            what = f"batch {b} throughput" if throughput else "batch 1 latency"
            self.add(timed_rows(8, label, f"assembled (10 tasks) vs teacher, {what}", times["assembled"],
                                times["teacher"], baseline_name="teacher", batch=b, throughput=throughput,
                                target=f"ratio <= {limit:.2f}", note=f"FLOP ratio {flop_ratio:.3f}; {params}"))
        for n in SEPARATE_TASKS:
            chosen = [t.name for t in tasks[:n]]
            network = bank.assemble(chosen)
            factors = [bank.factor(name) for name in chosen]
            times = interleaved({"assembled": self.inference(lambda x=x1, net=network: net(x)),
                                 "separate": self.inference(lambda x=x1, fs=factors: [f(x) for f in fs])},
                                s.real_repeats, s.warmup, device)
            self.add(timed_rows(8, label, f"assembled vs {n} separate factor networks, batch 1 latency",
                                times["assembled"], times["separate"], baseline_name=f"{n} factor networks",
                                batch=1, throughput=False, target="ratio <= 0.5"))

        # KF step vs KD step, and the loader on JPEGs on disk
        folder = write_jpeg_folder(work / "real-jpegs", [t.labels[1] for t in tasks], per_class=max(batch, 4))
        from kf_model.data import open_dataset

        dataset = open_dataset(folder, "train", input_spec=spec, val_fraction=0.0, test_fraction=0.0)
        workers = min(4, os.cpu_count() or 1)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                             pin_memory=device.cuda, persistent_workers=workers > 0)
        images, targets = next(iter(loader))
        images, targets = images.to(device.device), targets.to(device.device)
        times = interleaved({"kf": kf.step_fn(images, targets, device), "kd": kd.step_fn(images, targets, device)},
                            s.real_repeats, s.warmup, device)
        self.add(timed_rows(8, label, f"KF training step vs KD-baseline step, batch {batch}", times["kf"],
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
        self.add(check_target(Row(8, f"JPEG image-folder loader vs KF step consumption, batch {batch}", label,
                                  loader_rate, "img/s", step_rate, f"KF step ({device.device.type})",
                                  loader_rate / step_rate, HEADROOM, "ratio >= 1",
                                  note=f"{len(dataset)} JPEGs of 320x240 decoded and resized to {size} px, "
                                       f"num_workers={workers}")))

    # ------------------------------------------------------------------ 5
    def section_serving(self, work: Path) -> None:
        from gradio_client import Client, handle_file

        from kf_model.serving import BankRegistry

        s = self.settings
        folder = work / "factors"
        folder.mkdir()
        for bank in self.banks:
            if bank.loaded:
                (folder / bank.key).symlink_to(bank.path.resolve(), target_is_directory=True)
            else:
                bank.bank.to("cpu").save_pretrained(folder / bank.key)
        requests = {bank.key: (str(example_image(bank, work)), [t.name for t in bank.bank.tasks])
                    for bank in self.banks}
        env = {**os.environ, "KF_FACTORS_DIR": str(folder), "KF_ALLOW_HUB": "0", "KF_BENCH_FLOOR": "1",
               "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "KF_TORCH_THREADS": str(torch.get_num_threads())}
        if not self.device.cuda:
            env["KF_DEVICE"] = "cpu"
        first_key = self.banks[0].key

        # cold start (process start -> first /predict answer) next to `import app` in a fresh process, alternately
        cold, imports, import_rss = [], [], []
        app: AppProcess | None = None
        for run in range(s.cold_starts):
            for what in ("probe", "app") if run % 2 == 0 else ("app", "probe"):
                if what == "probe":
                    seconds, rss_kb = import_probe(env)
                    imports.append(seconds)
                    import_rss.append(rss_kb / 1024)
                    continue
                if app is not None:
                    app.stop()
                app = AppProcess(env, work / f"app-{run}.log")
                app.wait_until_up()
                app.http.predict(*requests[first_key][:1], first_key, requests[first_key][1])
                cold.append(time.perf_counter() - app.started)
        assert app is not None
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                client = Client(app.url, verbose=False)
            registry = BankRegistry(folder, allow_hub=False, device=None if self.device.cuda else "cpu")
            app_device = registry.device.type
            for key, (image, tasks) in requests.items():
                sides = {
                    "gradio_client": lambda image=image, key=key, tasks=tasks: client.predict(
                        handle_file(image), key, tasks, api_name="/predict"),
                    "http": lambda image=image, key=key, tasks=tasks: app.http.predict(image, key, tasks),
                    "in-process": lambda image=image, key=key, tasks=tasks: registry.predict(image, key, tasks),
                    "floor": lambda image=image, key=key, tasks=tasks: app.http.predict(image, key, tasks, "noop"),
                }
                times = interleaved(sides, s.serving_requests, s.warmup + 1, Device(torch.device("cpu")))
                for side, label in (("gradio_client", "gradio_client.Client.predict"),
                                    ("http", "HTTP, one kept-alive connection (Gradio's /call API)")):
                    for q in (50, 95):
                        value, base = percentile(times[side], q), percentile(times["in-process"], q)
                        self.add(Row(5, f"/predict p{q}, {len(tasks)} tasks, via {label}", key, 1000 * value, "ms",
                                     1000 * base, "in-process BankRegistry.predict", value / base, COST,
                                     note=f"app on {app_device}; {s.serving_requests} requests per side, interleaved"))
                self.add(floor_row(key, len(tasks), times, s.serving_requests))
            peak_mb = vm_hwm_kb(app.process.pid) / 1024
        finally:
            app.stop()
        keys = ", ".join(b.key for b in self.banks)
        self.add(Row(5, "cold start: `python app.py` to its first /predict answer", None, statistics.median(cold), "s",
                     statistics.median(imports), "`import app` in a fresh process",
                     statistics.median(cold) / statistics.median(imports), COST,
                     note=f"median of {len(cold)}; banks {keys}, each loaded and warmed up"))
        self.add(check_target(Row(5, f"peak RSS of the app process (VmHWM), banks {keys}", None, peak_mb, "MB",
                                  statistics.median(import_rss), "`import app` process",
                                  peak_mb / statistics.median(import_rss), COST, f"value <= {MEMORY_LIMIT_MB:g}",
                                  note=f"after {3 * (s.serving_requests + s.warmup + 1)} requests per bank")))

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        started = time.time()
        load_start = os.getloadavg()
        machine = machine_info(self.device)
        print(header(machine, self.settings, self.args.quick), flush=True)
        with tempfile.TemporaryDirectory(prefix="kf-bench-") as tmp:
            work = Path(tmp)
            for path in self.args.banks:
                self.guarded(f"bank {path}", lambda path=path: self.banks.append(load_bench_bank(path, work)))
                keys = [bank.key for bank in self.banks[:-1]]
                if self.banks and self.banks[-1].key in keys:  # two folders of the same name: keep keys unique
                    self.banks[-1].key = f"{self.banks[-1].key}-{len(self.banks)}"
            for bank in self.banks:
                for note in bank.notes:
                    print(f"note: {note}")
            for bank in self.banks:
                self.guarded(f"{bank.key}: sections 1-2 (assembled network)", self.section_networks, bank)
                self.guarded(f"{bank.key}: section 3 (TSN stack)", self.section_stack, bank)
                self.guarded(f"{bank.key}: sections 4 and 6 (training)", self.section_training, bank, work)
                if importlib.util.find_spec("onnxruntime"):
                    self.guarded(f"{bank.key}: section 7 (ONNX)", self.section_onnx, bank, work)
                else:
                    self.notes.append("section 7 (ONNX) skipped: onnxruntime is not installed")
            if self.args.skip_real_size:
                self.notes.append("section 8 (real size) skipped (--skip-real-size)")
            else:
                self.guarded("section 8 (real size: timm teacher and CKN)", self.section_real_size, work)
            if self.args.skip_serving:
                self.notes.append("section 5 (serving) skipped (--skip-serving)")
            elif self.banks:
                self.guarded("section 5 (serving)", self.section_serving, work)
        for bank in self.banks:
            self.notes += [f"{bank.key}: {note}" for note in bank.notes]
        machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        machine["load_average_start"] = [round(v, 2) for v in load_start]
        self.notes.append("ratios compare two sides timed alternately in the same run (medians): they are robust to "
                          "the machine's load; absolute times and images/s are not (load average "
                          f"{load_start[0]:.2f} at the start, {machine['load_average_end'][0]:.2f} at the end, on "
                          f"{machine['cpu_count']} CPUs)")
        targets = [r for r in self.rows if r.passed is not None]
        return {
            "format_version": FORMAT_VERSION,
            "command": " ".join(["python -m kf_model.bench", *self.args.argv]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "quick": bool(self.args.quick),
            "machine": machine,
            "settings": asdict(self.settings),
            "banks": {bank.key: bank.summary() for bank in self.banks},
            "checks": self.checks,
            "notes": self.notes,
            "errors": self.errors,
            "rows": [asdict(r) for r in self.rows],
            "summary": {"targets": len(targets), "passed": sum(bool(r.passed) for r in targets),
                        "failed": [f"{r.bank}: {r.name}" if r.bank else r.name for r in targets if not r.passed]},
        }


# ============================================================================= pieces

def floor_row(bank: str, tasks: int, times: dict[str, list[float]], requests: int) -> Row:
    """/predict's p50 over HTTP against what it may cost: the p50 of a no-op endpoint on the same path (upload,
    queue, event stream) plus twice the in-process prediction (target: ratio <= 1)."""
    value, floor, inside = (1000 * percentile(times[side], 50) for side in ("http", "floor", "in-process"))
    allowed = floor + 2 * inside
    return check_target(Row(5, f"/predict p50 vs Gradio's floor, {tasks} tasks, HTTP", bank, value, "ms", allowed,
                            "no-op endpoint p50 (same HTTP path) + 2x in-process predict", value / allowed, COST,
                            "ratio <= 1", note=f"floor p50 {floor:.1f} ms, in-process p50 {inside:.1f} ms; "
                                             f"{requests} requests per side, interleaved"))


def write_jpeg_folder(folder: Path, classes: Sequence[str], per_class: int) -> Path:
    """An image-folder tree of photo-like 320x240 RGB JPEGs (smooth gradients plus noise), one folder a class."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (folder / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ramp = torch.linspace(0, 1, 320).view(1, 1, 320).expand(3, 240, 320)
            pixels = (0.5 * ramp + 0.5 * torch.rand(3, 240, 320, generator=generator)) * 255
            array = pixels.permute(1, 2, 0).to(torch.uint8).numpy()
            Image.fromarray(array).save(folder / name.replace("/", "-") / f"{c}-{i}.jpg", quality=85)
    return folder


def forward_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs of one forward pass, counted by torch's own counter (convolutions count their groups)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def randomize_batchnorm(module: nn.Module) -> None:
    """Fresh BN layers are identities in eval mode; random statistics make the exactness check meaningful."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)


def einsum_stack_logits(stack: nn.Module, x: Tensor, z_common: Tensor) -> dict[str, Tensor]:
    """``TSNStack.forward`` as it was before issue 6 (module encoder, einsum heads), to measure the change."""
    from kf_model.models import split_variational

    projected = torch.einsum("bks,kps->bkp", stack.encoder(x), stack.proj)
    z, _, _ = split_variational(projected, stack.variational, stack.training)
    logits = torch.einsum("bkc,knc->bkn", z_common.unsqueeze(1) + z, stack.head_weight) + stack.head_bias
    _aux = torch.einsum("bkc,knc->bkn", z, stack.aux_weight) + stack.aux_bias  # computed then, too
    return {t.name: logits[:, i, :t.num_classes] for i, t in enumerate(stack.tasks)}


def vmapped_tsns(tsns: Sequence[nn.Module]) -> Callable[[Tensor, Tensor], Tensor]:
    """The TSNs as one ``torch.func.vmap`` over their stacked parameters: [k, B, classes] logits."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(list(tsns))
    base = copy.deepcopy(tsns[0]).to("meta")

    def one(p: dict, b: dict, x: Tensor, z: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x, z)).logits

    batched = vmap(one, in_dims=(0, 0, None, None))
    return lambda x, z: batched(params, buffers, x, z)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Full float32 matmuls and convolutions on CUDA (TF32 would differ from a loop by ~1e-3)."""
    if not torch.cuda.is_available():
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


IMPORT_PROBE = """
import json, time
import app  # noqa: F401  (gradio, torch and kf: everything the app imports, before any bank is loaded)
status = open('/proc/self/status').read() if __import__('os').path.exists('/proc/self/status') else ''
kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith('VmHWM:')), 0)
print(json.dumps({'vmhwm_kb': kb}))
"""


def vm_hwm_kb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in kB (Linux); NaN elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GradioHTTP:
    """The app's /predict over one kept-alive HTTP connection, through Gradio's documented ``/call`` API (what a
    browser or any HTTP client that reuses its connection sees; gradio_client opens a new client per request)."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=120)

    def ready(self) -> bool:
        try:
            return self.client.get(f"{self.url}/config").status_code == 200
        except Exception:  # httpx.TransportError while the server starts
            return False

    def predict(self, image: str, bank: str, tasks: list[str], api: str = "predict") -> dict[str, Any]:
        """One call of ``api`` (``"predict"``, or ``"noop"``: the same path doing nothing) with its upload."""
        with open(image, "rb") as file:
            uploaded = self.client.post(f"{self.url}/gradio_api/upload", files={"files": file})
        uploaded.raise_for_status()
        payload = {"data": [{"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}, bank, tasks]}
        call = self.client.post(f"{self.url}/gradio_api/call/{api}", json=payload)
        call.raise_for_status()
        event = None
        with self.client.stream("GET", f"{self.url}/gradio_api/call/{api}/{call.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    data = json.loads(line[5:])
                    if event == "error":
                        raise RuntimeError(f"/{api} failed: {data}")
                    return data[0]
        raise RuntimeError(f"/{api}: the event stream ended without an answer")

    def close(self) -> None:
        self.client.close()


class AppProcess:
    """``python app.py`` on a free port, as a subprocess (its output goes to ``log``)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.url = f"http://127.0.0.1:{free_port()}/"
        self.started = time.perf_counter()
        with log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port",
                                             self.url.rsplit(":", 1)[1].strip("/")], cwd=ROOT, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)
        self.http = GradioHTTP(self.url)

    def wait_until_up(self) -> None:
        deadline = self.started + SERVER_START_TIMEOUT_S
        while not self.http.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"python app.py exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"the app did not answer within {SERVER_START_TIMEOUT_S:.0f} s:\n"
                                   f"{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def import_probe(env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in kB) of a fresh process that only imports the app (gradio, torch, kf)."""
    start = time.perf_counter()
    probe = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=SERVER_START_TIMEOUT_S)
    seconds = time.perf_counter() - start
    if probe.returncode != 0:
        raise RuntimeError(f"importing app.py failed:\n{probe.stderr[-2000:]}")
    return seconds, float(json.loads(probe.stdout.strip().splitlines()[-1])["vmhwm_kb"])


def example_image(bank: BenchBank, work: Path) -> Path:
    """A bundled example image of the bank's dataset, or a drawn one of its input size."""
    try:
        listing = json.loads((EXAMPLES_DIR / "examples.json").read_text())
        for item in listing.get("examples", []):
            path = EXAMPLES_DIR / item["file"]
            if item.get("dataset") == bank.dataset and not item.get("inverted") and path.is_file():
                return path
    except (OSError, ValueError, KeyError):
        pass
    from PIL import Image, ImageDraw

    spec = bank.info.input_spec
    image = Image.new("L" if spec.channels == 1 else "RGB", (spec.size, spec.size))
    ImageDraw.Draw(image).rectangle([spec.size // 4, spec.size // 4, spec.size // 2, 3 * spec.size // 4], fill="white")
    path = work / f"{bank.key}-example.png"
    image.save(path)
    return path


def machine_info(device: Device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device.device), "device_name": device.describe(), "precision": device.precision,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if device.cuda:
        info["cuda"] = torch.version.cuda
    return info


def header(machine: dict[str, Any], settings: Settings, quick: bool) -> str:
    load = os.getloadavg()
    return (f"kf benchmark{' (--quick)' if quick else ''}: {machine['device_name']}; CPU {machine['cpu']}, "
            f"{machine['cpu_count']} cores, torch {machine['torch']} with {machine['torch_threads']} thread(s); "
            f"load average {load[0]:.2f}\n"
            f"medians of {settings.latency_repeats} (batch 1) / {settings.throughput_repeats} (batch "
            f"{settings.throughput_batch}) interleaved repeats per side after {settings.warmup} warm-up call(s)")


def format_value(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "img/s":
        return f"{value:,.0f} {unit}"
    if unit == "MB":
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def table(result: dict[str, Any]) -> str:
    """The results as a Markdown table (also what the README shows)."""
    lines = ["| # | bank | measurement | value | baseline | ratio | target |", "|---|---|---|---:|---|---:|---|"]
    for r in result["rows"]:
        target = "" if not r["target"] else f"{r['target'].replace('ratio ', '').replace('value ', '')} " + (
            "✅" if r["passed"] else "❌")
        baseline = "" if r["baseline"] is None else f"{r['baseline_name']}: {format_value(r['baseline'], r['unit'])}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['section']} | {r['bank'] or ''} | {r['name']} | {format_value(r['value'], r['unit'])} | "
                     f"{baseline} | {ratio} | {target} |")
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    summary = result["summary"]
    lines = [
        "", f"## kf benchmark: {m['device_name']}",
        f"CPU {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}, {m['torch_threads']} torch thread(s); "
        f"load average {m['load_average_start'][0]} at the start, {m['load_average_end'][0]} at the end; "
        f"{result['seconds']:.0f} s", "",
        "ratio = time / baseline time (lower is better; for img/s rows that is baseline img/s / img/s), "
        "except section 6: loader img/s / step img/s (higher is better).", "",
        table(result), "",
        f"targets met: {summary['passed']} of {summary['targets']}"
        + (f"; missed: {'; '.join(summary['failed'])}" if summary["failed"] else ""),
    ]
    lines += [f"- {note}" for note in result["notes"]]
    lines += [f"- ERROR {error}" for error in result["errors"]]
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kf_model.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available (bf16 autocast), else the CPU")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration (few repeats, small batches)")
    parser.add_argument("--banks", nargs="+", default=list(DEFAULT_BANKS),
                        help="factor bank folders; a missing one named after a dataset is built untrained from its "
                             "recipe")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON results are written")
    parser.add_argument("--skip-serving", action="store_true", help="skip section 5 (starts the app)")
    parser.add_argument("--skip-real-size", action="store_true", help="skip section 8 (224-px timm networks)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (also the app's KF_TORCH_THREADS)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    result = Bench(args).run()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(report(result))
    print(f"\nwrote {out}")
    if result["errors"]:
        raise SystemExit(f"{len(result['errors'])} section(s) failed: " + "; ".join(result["errors"]))
    return result


if __name__ == "__main__":
    main()


__all__ = ["FULL", "QUICK", "Bench", "Row", "Settings", "interleaved", "main", "percentile"]
