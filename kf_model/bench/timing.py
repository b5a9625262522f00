"""The device a benchmark runs on, and timing: sides of a ratio timed alternately, GC paused.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kf_model.devices import autocast_dtype, pick_device

# ============================================================================= device and timing

@dataclass
class Device:
    device: torch.device
    cpu_clock: bool = False  # time the calling thread's CPU time, not the wall (``--clock cpu``)

    def clock(self) -> float:
        """Seconds now: the wall clock, or with ``cpu_clock`` (CPU, 1 torch thread) the calling thread's CPU time,
        which the machine's other processes do not inflate when they take the core away (on a shared 2-core
        machine at load 7, wall-clock medians of the same two networks moved 1.2 -> 1.5; CPU time stayed put)."""
        return time.thread_time() if self.cpu_clock else time.perf_counter()

    def wall(self) -> Device:
        """This device timed by the wall clock (training steps: compared with a multi-process loader)."""
        return Device(self.device)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @property
    def half(self) -> torch.dtype:
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


def bench_device(name: str, clock: str = "wall") -> Device:
    """--device: "auto" (CUDA when available), "cpu" or "cuda" (refused when there is none); --clock "cpu": thread
    CPU time, for the CPU with one torch thread only (other threads' work would go uncounted)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (use --device cpu or auto)")
    device = Device(pick_device(name))
    if clock == "cpu" and (device.cuda or torch.get_num_threads() != 1):
        raise SystemExit("--clock cpu times one CPU thread: use it with the CPU and --threads 1")
    device.cpu_clock = clock == "cpu"
    return device


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep the memory it frees (no heap trimming; blocks up to 32 MiB from the heap, not
    fresh mappings) for the rest of this process; False where that is not glibc. By default, glibc gives large freed
    blocks back to the system depending on the history of calls, and the next call faults them in again (10,000
    page faults per batch-256 forward pass of dSprites' networks): which side of a ratio paid for it depended on
    which ran before, and section 1's batch-256 ratio of the same two networks (dSprites, assembled / fair teacher)
    moved between 0.93 and 1.55 from run to run; with this, medians of 1.11-1.13 over 6 runs. Both sides of every
    ratio run in this one process."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_trim_threshold, 2**30)) and bool(mallopt(m_mmap_threshold, 2**25))


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
                start = device.clock()
                sides[name]()
                device.sync()
                times[name].append(device.clock() - start)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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
