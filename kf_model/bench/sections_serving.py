"""Section 5 of the benchmark: the app in a subprocess (HTTP API latency, memory)."""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kf_model.bench.app_process import AppProcess, example_image, import_probe, mixed_workload, vm_hwm_kb
from kf_model.bench.processes import app_memory_mb, child_pids, wait_until_children_idle
from kf_model.bench.sections_concurrency import IN_PROCESS_KINDS, concurrency
from kf_model.bench.settings import (
    COST,
    MEMORY_LIMIT_MB,
    SERVER_START_TIMEOUT_S,
    Row,
    check_target,
)
from kf_model.bench.timing import Device, interleaved, percentile
from kf_model.bench.workloads import (
    floor_row,
    plateau_row,
)

if TYPE_CHECKING:
    from kf_model.bench.runner import Bench


def serving(bench: Bench, work: Path) -> None:
    from gradio_client import Client

    from kf_model.serving import BankRegistry
    from kf_model.serving.registry import DEFAULT_APP_RUNTIME
    from kf_model.serving.runtime import EXPORT_AFTER

    s = bench.settings
    folder = work / "factors"
    folder.mkdir()
    for bank in bench.banks:
        if bank.loaded:
            (folder / bank.key).symlink_to(bank.path.resolve(), target_is_directory=True)
        else:
            bank.bank.to("cpu").save_pretrained(folder / bank.key)
    requests = {bank.key: (str(example_image(bank, work)), [t.name for t in bank.bank.tasks])
                for bank in bench.banks}
    env = {**{k: v for k, v in os.environ.items() if k != "KF_PREDICT_WORKERS"},  # the app's default workers
           "KF_FACTORS_DIR": str(folder), "KF_ALLOW_HUB": "0", "KF_BENCH_FLOOR": "1",
           "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "KF_TORCH_THREADS": str(torch.get_num_threads())}
    if not bench.device.cuda:
        env["KF_DEVICE"] = "cpu"
    first_key = bench.banks[0].key

    app, cold, imports, import_rss = cold_starts(env, work, s.cold_starts, first_key, *requests[first_key])
    wait_until_children_idle(app.process.pid, quiet_s=2.0)  # its prediction workers (if any) have loaded the banks
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            client = Client(app.url, verbose=False)
        # the in-process baseline runs the app's default runtime; both sides have served each bank's tick set often
        # enough to have picked their runtime (auto exports a tick set after EXPORT_AFTER requests) before any timing
        registry = BankRegistry(folder, allow_hub=False, device=None if bench.device.cuda else "cpu",
                                runtime=DEFAULT_APP_RUNTIME)
        for key, (image, tasks) in requests.items():
            for _ in range(EXPORT_AFTER):
                app.http.predict(image, key, tasks)
                registry.predict(image, key, tasks)
        registry.runtime.wait(SERVER_START_TIMEOUT_S)
        wait_until_children_idle(app.process.pid, quiet_s=2.0)  # the app's exports and measurements are done
        latency_rows(bench, app, client, registry, requests)
        memory = mixed_workload(app.http, app.process.pid, requests, s.memory_requests)
        memory.append((memory[-1][0], app_memory_mb(app.process.pid)))
        children = child_pids(app.process.pid)
        peaks = [vm_hwm_kb(pid) / 1024 for pid in [app.process.pid, *children]]
        concurrency(bench, app.url, app.process.pid, first_key, *requests[first_key])  # after the memory figures
    finally:
        app.stop()
    alone = AppProcess({**env, "KF_PREDICT_WORKERS": "0"}, work / "app-alone.log")
    try:
        alone.wait_until_up()
        concurrency(bench, alone.url, alone.process.pid, first_key, *requests[first_key], kinds=IN_PROCESS_KINDS)
    finally:
        alone.stop()
    keys = ", ".join(b.key for b in bench.banks)
    bench.add(Row(5, "cold start: `python app.py` to its first /predict answer", None, statistics.median(cold), "s",
                 statistics.median(imports), "`import kf_model.ui.app` in a fresh process",
                 statistics.median(cold) / statistics.median(imports), COST,
                 note=f"median of {len(cold)}; banks {keys}, each loaded and warmed up"))
    memory_rows(bench, keys, memory, peaks, len(children), statistics.median(import_rss))


def cold_starts(env: dict[str, str], work: Path, count: int, key: str, image: str, tasks: list[str]
                ) -> tuple[AppProcess, list[float], list[float], list[float]]:
    """``count`` cold starts (process start -> first /predict answer) next to as many fresh processes that only
    import the app's code, alternately: (the last app, still running; start seconds; import seconds; import MB)."""
    cold, imports, import_rss = [], [], []
    app: AppProcess | None = None
    for run in range(count):
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
            app.http.predict(image, key, tasks)
            cold.append(time.perf_counter() - app.started)
    assert app is not None
    return app, cold, imports, import_rss


def memory_rows(bench: Bench, keys: str, memory: list[tuple[int, float]], peaks: list[float], children: int,
                import_mb: float) -> None:
    """The memory of the app's processes (targeted: peak, plateau) and the app process's own VmHWM."""
    s = bench.settings
    served = (f"after {3 * (s.serving_requests + s.warmup + 1)} requests per bank and a mixed workload of "
              f"{s.memory_requests:,}")
    peak_mb = max(mb for _, mb in memory)
    bench.add(check_target(Row(5, f"peak memory of the app's processes (private pages of each + shared pages once), "
                                  f"banks {keys}", None, peak_mb, "MB", import_mb,
                              "`import kf_model.ui.app` process (VmHWM)", peak_mb / import_mb, COST,
                              f"value <= {MEMORY_LIMIT_MB:g}",
                              note=f"the app and {children} child process(es) (prediction workers and "
                                   f"multiprocessing's resource tracker), sampled {len(memory)} times {served}")))
    bench.add(Row(5, f"peak RSS of the app process (VmHWM), banks {keys}", None, peaks[0], "MB", import_mb,
                  "`import kf_model.ui.app` process", peaks[0] / import_mb, COST,
                  note=f"{served}; VmHWM of its children: {', '.join(f'{mb:,.0f}' for mb in peaks[1:]) or 'none'} "
                       f"MB (RSS counts the shared libraries in each process)"))
    bench.add(plateau_row(memory, keys))


def latency_rows(bench: Bench, app: AppProcess, client: Any, registry: Any,
                 requests: dict[str, tuple[str, list[str]]]) -> None:
    """Per bank: /predict p50/p95 through gradio_client and over HTTP against the same prediction in-process, and
    /predict against Gradio's floor, timed alternately."""
    from gradio_client import handle_file

    s = bench.settings
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
                bench.add(Row(5, f"/predict p{q}, {len(tasks)} tasks, via {label}", key, 1000 * value, "ms",
                             1000 * base, "in-process BankRegistry.predict", value / base, COST,
                             note=f"app on {app_device}; {s.serving_requests} requests per side, interleaved"))
        bench.add(floor_row(key, len(tasks), times, s.serving_requests))
