"""The benchmark itself (:class:`Bench`, one method a section) and its command line (:func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kf_model.bench.app_process import AppProcess, example_image, import_probe, mixed_workload, vm_hwm_kb
from kf_model.bench.banks import (
    BenchBank,
    build_training,
    load_bench_bank,
    parse_job_args,
    recipe_config,
    training_loader,
)
from kf_model.bench.report import format_quantity, header, machine_info, report
from kf_model.bench.settings import (
    COST,
    DEFAULT_BANKS,
    DEFAULT_OUT,
    EQUALITY_ATOL,
    FORMAT_VERSION,
    FULL,
    HEADROOM,
    MEMORY_LIMIT_MB,
    QUICK,
    SEPARATE_TASKS,
    STACK_BATCHES,
    STACK_TASKS,
    BenchOptions,
    Row,
    check_target,
    timed_rows,
)
from kf_model.bench.timing import Device, bench_device, gc_paused, interleaved, no_tf32, percentile
from kf_model.bench.workloads import (
    einsum_stack_logits,
    floor_row,
    forward_flops,
    plateau_row,
    randomize_batchnorm,
    vmapped_tsns,
    write_jpeg_folder,
)
from kf_model.errors import InvalidArgumentError
from kf_model.models.folded import fold_for_inference

# ============================================================================= the benchmark

class Bench:
    def __init__(self, args: BenchOptions) -> None:
        self.args = args
        self.settings = QUICK if args.quick else FULL
        self.device = bench_device(args.device)
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
        print(f"  [{row.section}] {row.bank or '-'}: {row.name}: {format_quantity(row.value, row.unit)}"
              + ("" if row.baseline is None else f" vs {row.baseline_name} {format_quantity(row.baseline, row.unit)}")
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
        folded_teacher = fold_for_inference(teacher)  # the inference rewrites assembly applies to its CKN copy
        for batch, repeats, throughput in ((1, s.latency_repeats, False),
                                           (s.throughput_batch, s.throughput_repeats, True)):
            x = self.images(bank, batch)
            times = interleaved({"assembled": self.inference(lambda x=x: assembled(x)),
                                 "teacher": self.inference(lambda x=x: teacher(x)),
                                 "folded teacher": self.inference(lambda x=x: folded_teacher(x))},
                                repeats, s.warmup, device)
            what = f"batch {batch} throughput" if throughput else "batch 1 latency"
            self.add(timed_rows(1, bank.key, f"assembled ({k} tasks) vs teacher, {what}", times["assembled"],
                                times["teacher"], baseline_name="teacher", batch=batch, throughput=throughput,
                                target=f"ratio <= {limit:.2f}", note=f"FLOP ratio {flop_ratio:.3f}"))
            self.add(timed_rows(1, bank.key, f"assembled ({k} tasks) vs teacher with the same inference folding, "
                                f"{what}", times["assembled"], times["folded teacher"],
                                baseline_name="folded teacher", batch=batch, throughput=throughput,
                                note="fold_for_inference(teacher): what the TSNs cost next to the same trunk code"))

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
        from kf_model.models.stacking import EXECUTION_PATHS, TSNStack

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
        forced_paths = {}  # each execution path the stack chooses between, pinned, to show the rule is right
        for path in EXECUTION_PATHS[1:] if device.device.type == "cpu" else ("grouped", "per-task"):
            forced_paths[path] = copy.deepcopy(stack)
            forced_paths[path].forced_path = path

        def variants(x: Tensor, z: Tensor) -> dict[str, Callable[[], Any]]:
            x_cl = x.contiguous(memory_format=torch.channels_last)
            return {
                "loop": lambda: [t(x, z).logits for t in tsns],
                "stack": lambda: stack(x, z).logits,
                "stack, BN not folded": lambda: unfused(x, z).logits,
                "stack before issue 6 (einsum heads, BN not folded)": lambda: einsum_stack_logits(unfused, x, z),
                "stack, channels_last": lambda: stack_cl(x_cl, z).logits,
                "vmap over the TSNs": lambda: vmapped(x, z),
                **{f"stack forced to {path}": lambda stack=forced: stack(x, z).logits
                   for path, forced in forced_paths.items()},
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
                sides = {name: side for name, side in sides.items() if name in ("loop", "stack")
                         or name.startswith("stack forced")}
            times = interleaved(sides, repeats, s.warmup, device)
            what = f"batch {batch} throughput" if throughput else "batch 1 latency"
            path = stack.execution_path(x)
            self.add(timed_rows(3, bank.key, f"TSN stack vs loop over {STACK_TASKS} TSNs, {what}", times["stack"],
                                times["loop"], baseline_name="loop", batch=batch, throughput=throughput,
                                target="ratio <= 1.0",
                                note=f"stack runs {path}; max |stack - loop| = {worst['stack']:.1e}"))
            for name in list(sides)[2:]:
                self.add(timed_rows(3, bank.key, f"{name} vs stack as shipped, {what}", times[name],
                                    times["stack"], baseline_name="stack", batch=batch, throughput=throughput,
                                    note=f"max |{name} - loop| = {worst[name]:.1e}; shipped runs {path}"))

    # ------------------------------------------------------------------ 4 and 6
    def section_training(self, bank: BenchBank, work: Path) -> None:
        from kf_model.bank import save_module
        from kf_model.errors import KFError
        from kf_model.training import DataConfig, DistillJob, FactorizeJob, LoaderConfig
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
                            s.train_repeats, s.warmup, device)
        kd_params = count_parameters(kd.model)
        kf_params = count_parameters(kf.model)
        self.add(timed_rows(4, bank.key, f"KF training step vs KD-baseline step, batch {batch}", times["kf"],
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
            rss = mixed_workload(app.http, app.process.pid, requests, s.memory_requests)
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
                                  note=f"after {3 * (s.serving_requests + s.warmup + 1)} requests per bank and a "
                                       f"mixed workload of {s.memory_requests:,}")))
        self.add(plateau_row(rss, keys))

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


def parse_arguments(argv: Sequence[str] | None = None) -> BenchOptions:
    from kf_model import bench

    parser = argparse.ArgumentParser(prog="python -m kf_model.bench", description=bench.__doc__.split("\n\n")[0],
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
    try:
        return BenchOptions.from_args(parser.parse_args(argv), argv=argv)
    except InvalidArgumentError as error:
        parser.error(str(error))


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
