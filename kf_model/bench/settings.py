"""The benchmark's settings (full and ``--quick``), its rows and their targets.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from kf_model.errors import InvalidArgumentError, UnwritablePathError
from kf_model.training.config import FromArgs
from kf_model.utils import ASSETS_DIR, REPO_ROOT, writable_file

CONFIG_DIR = REPO_ROOT / "train" / "configs"
EXAMPLES_DIR = ASSETS_DIR / "examples"
DEFAULT_BANKS = ("assets/factors/dsprites", "assets/factors/fashion-mnist")
DEFAULT_OUT = "runs/bench.json"
MAX_THREADS = 1024  # torch CPU threads (--threads)
STACK_TASKS = 10  # section 3
STACK_BATCHES = (16, 64, 128)  # section 3 also times these batch sizes (below the throughput batch)
SEPARATE_TASKS = (5, 10)  # section 2
EQUALITY_ATOL = 1e-5
MEMORY_LIMIT_MB = 1536.0  # 1.5 GB: the app's processes (the app and its prediction workers), both banks loaded
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
    memory_requests: int  # section 5's mixed workload (random task subsets over every bank) for the memory plateau
    cold_starts: int
    warmup: int
    requests_per_client: int = 10  # section 5's concurrent clients: at least this many requests each (see there)
    real_teacher: str = "resnet50"  # section 8: a timm teacher at real size ...
    real_ckn: str = "resnet18"  # ... factorized into a smaller timm CKN
    real_size: int = 224
    real_batch: int = 8  # CPU: small batches (CUDA: --real-batch)
    real_repeats: int = 5


FULL = Settings(latency_repeats=100, throughput_batch=256, throughput_repeats=7, train_batch=None, train_repeats=8,
                loader_batches=30, serving_requests=40, memory_requests=4_500, cold_starts=3, warmup=3)
QUICK = Settings(latency_repeats=6, throughput_batch=8, throughput_repeats=2, train_batch=8, train_repeats=2,
                 loader_batches=2, serving_requests=4, memory_requests=40, cold_starts=1, warmup=1,
                 requests_per_client=2, real_teacher="test_resnet",
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


DEVICES = ("auto", "cpu", "cuda")
# --sections: what one run measures (default: all); "runtime" is section 9 (the app's runtimes and int8)
SECTIONS = ("networks", "stack", "training", "onnx", "runtime", "real-size", "serving")
CLOCKS = ("wall", "cpu")  # --clock: what sections 1-3 and 8's inference rows time
MALLOCS = ("keep", "default")  # --malloc: glibc keeps freed memory for the bench process (timing.keep_freed_memory)


@dataclass(frozen=True)
class BenchOptions(FromArgs):
    """What one benchmark run measures, and where its results go (``python -m kf_model.bench``'s flags)."""

    device: str = "auto"
    quick: bool = False
    banks: tuple[str, ...] = DEFAULT_BANKS
    out: str = DEFAULT_OUT
    skip_serving: bool = False
    skip_real_size: bool = False
    threads: int = 1
    sections: tuple[str, ...] = SECTIONS
    clock: str = "wall"
    malloc: str = "keep"
    argv: tuple[str, ...] = ()  # the command line, recorded in the results

    def __post_init__(self) -> None:
        object.__setattr__(self, "banks", tuple(self.banks))
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "sections", tuple(self.sections))
        if self.clock not in CLOCKS:
            raise InvalidArgumentError(f"--clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.malloc not in MALLOCS:
            raise InvalidArgumentError(f"--malloc must be one of {', '.join(MALLOCS)}, got {self.malloc!r}")
        unknown = [name for name in self.sections if name not in SECTIONS]
        if unknown or not self.sections:
            raise InvalidArgumentError(f"--sections takes some of {', '.join(SECTIONS)}, got {unknown or 'none'}")
        if self.device not in DEVICES:
            raise InvalidArgumentError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 1 <= self.threads <= MAX_THREADS:
            raise InvalidArgumentError(f"--threads must be from 1 to {MAX_THREADS}, got {self.threads}")
        try:  # the results are written after the whole bench: a path they cannot go to is refused before it
            writable_file(self.out, "--out")
        except UnwritablePathError as error:
            raise InvalidArgumentError(str(error)) from None
