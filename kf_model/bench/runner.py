"""The benchmark itself (:class:`Bench`: the rows, the notes, the run) and its command line (:func:`main`); each
section is a function of its own module (``sections_inference``, ``sections_training``, ``sections_real_size``,
``sections_serving``) given the bench.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
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

from kf_model.bench import (
    sections_inference,
    sections_photo,
    sections_real_size,
    sections_runtime,
    sections_serving,
    sections_training,
)
from kf_model.bench.banks import (
    BenchBank,
    load_bench_bank,
)
from kf_model.bench.report import format_quantity, header, machine_info, report
from kf_model.bench.settings import (
    CLOCKS,
    DEFAULT_BANKS,
    DEFAULT_OUT,
    EQUALITY_ATOL,
    FORMAT_VERSION,
    FULL,
    MALLOCS,
    QUICK,
    SECTIONS,
    BenchOptions,
    Row,
)
from kf_model.bench.timing import bench_device, keep_freed_memory
from kf_model.errors import InvalidArgumentError
from kf_model.utils import git_commit

# ============================================================================= the benchmark

class Bench:
    def __init__(self, args: BenchOptions) -> None:
        self.args = args
        self.settings = QUICK if args.quick else FULL
        self.device = bench_device(args.device, args.clock)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.checks: dict[str, Any] = {"tolerance": EQUALITY_ATOL}
        self.banks: list[BenchBank] = []
        self.errors: list[str] = []

    # ------------------------------------------------------------------ helpers
    def wants(self, section: str) -> bool:
        """Whether this run measures ``section`` (``--sections``; the --skip-* flags still apply)."""
        return section in self.args.sections

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

    # ------------------------------------------------------------------ run
    def _bank_sections(self, work: Path) -> None:
        """Sections 1-4, 6, 7 and 9 on each bank (those --sections names)."""
        onnx = importlib.util.find_spec("onnxruntime") is not None
        runtime = self.wants("runtime") and onnx and not self.device.cuda
        for bank in self.banks:
            if self.wants("networks"):
                self.guarded(f"{bank.key}: sections 1-2 (assembled network)", sections_inference.networks, self, bank)
            if self.wants("stack"):
                self.guarded(f"{bank.key}: section 3 (TSN stack)", sections_inference.stack, self, bank)
            if self.wants("training"):
                self.guarded(f"{bank.key}: sections 4 and 6 (training)", sections_training.training, self, bank, work)
            if self.wants("onnx") and onnx:
                self.guarded(f"{bank.key}: section 7 (ONNX)", sections_inference.onnx, self, bank, work)
            if runtime:
                self.guarded(f"{bank.key}: section 9 (app runtimes)", sections_runtime.runtimes, self, bank, work)
                self.guarded(f"{bank.key}: section 9 (int8)", sections_runtime.int8, self, bank, work)
        if runtime and not self.args.quick:
            self.guarded("section 9 (int8, photo bank)", sections_runtime.photo_int8, self, work)
        if not onnx and (self.wants("onnx") or self.wants("runtime")):
            self.notes.append("sections 7 and 9 (ONNX) skipped: onnxruntime is not installed")
        elif self.wants("runtime") and self.device.cuda:
            self.notes.append("section 9 (the app's runtimes, int8) skipped: it measures onnxruntime on the CPU")

    def run(self) -> dict[str, Any]:
        started = time.time()
        load_start = os.getloadavg()
        commit = git_commit()  # at the start: what was measured, not what the checkout became meanwhile
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
            self._bank_sections(work)
            if self.args.skip_real_size:
                self.notes.append("section 8 (real size) skipped (--skip-real-size)")
            elif self.wants("real-size") or self.wants("runtime"):
                self.guarded("section 8 (real size: timm teacher and CKN)", sections_real_size.real_size, self, work)
                if self.wants("real-size"):
                    self.guarded("section 8 (the photo bank at 224 px)", sections_photo.photo_bank, self)
            if self.args.skip_serving:
                self.notes.append("section 5 (serving) skipped (--skip-serving)")
            elif self.banks and self.wants("serving"):
                self.guarded("section 5 (serving)", sections_serving.serving, self, work)
        for bank in self.banks:
            self.notes += [f"{bank.key}: {note}" for note in bank.notes]
        machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        machine["load_average_start"] = [round(v, 2) for v in load_start]
        self.notes.append("ratios compare two sides timed alternately in the same run (medians): they are robust to "
                          "the machine's load; absolute times and images/s are not (load average "
                          f"{load_start[0]:.2f} at the start, {machine['load_average_end'][0]:.2f} at the end, on "
                          f"{machine['cpu_count']} CPUs)")
        if self.device.cpu_clock:
            self.notes.append("--clock cpu: sections 1-3 and section 8's inference rows timed by the calling thread's "
                              "CPU time, training steps and the app by the wall clock")
        targets = [r for r in self.rows if r.passed is not None]
        return {
            "format_version": FORMAT_VERSION,
            "command": " ".join(["python -m kf_model.bench", *self.args.argv]),
            "commit": commit,
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
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="cpu: time the calling thread's CPU time in sections 1-3 and 8 (CPU, --threads 1), so "
                             "that other processes on a shared machine do not move the ratios")
    parser.add_argument("--malloc", choices=MALLOCS, default="keep",
                        help="keep: glibc's malloc keeps freed memory in the bench process, so that a batch's page "
                             "faults do not depend on which side ran before (bench/timing.py keep_freed_memory)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="what to measure: networks (1-2), stack (3), training (4, 6), onnx (7), runtime (9: the "
                             "app's runtimes, int8), real-size (8), serving (5)")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return BenchOptions.from_args(parser.parse_args(argv), argv=argv)
    except InvalidArgumentError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    kept = args.malloc == "keep" and keep_freed_memory()
    result = Bench(args).run()
    result["machine"]["malloc"] = "glibc, freed memory kept (--malloc keep)" if kept else "default"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(report(result))
    print(f"\nwrote {out}")
    if result["errors"]:
        raise SystemExit(f"{len(result['errors'])} section(s) failed: " + "; ".join(result["errors"]))
    return result
