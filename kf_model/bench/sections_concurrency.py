"""Section 5's concurrent visitors: /predict throughput and latency at 1, 4 and 16 clients at once.

Each worker thread has its own client object (as separate visitors would) and sends its share of the requests
one after another; all workers start together. Three kinds of client: a kept-alive HTTP connection each (targeted:
the app's own scaling); the same on ``/noop`` (untargeted: /predict's inputs and HTTP path doing nothing, so the
app CPU of its rows is what Gradio itself costs a request, and the rest of /predict's is the prediction); and a
``gradio_client.Client`` each (untargeted: on the 2-core machine its calls cost the bench process 110-150 ms of CPU
each, 4x what they cost the app, so they measure the clients). Throughput is every
answered request over the wall time from the first start to the last answer; latencies are per request. Each
client makes at least ``requests_per_client`` (10) requests: with 2 each (40 requests shared by 16 clients), the
run's start and its tail, where fewer than 16 clients are left, were most of it, and the 16-client ratio of the
same app moved between 1.29 and 1.50 from run to run. Targets
(issue 22): throughput at 16 clients at least 1.5x that at 1 client, and p95 at 16 clients at most 16x the p50 at
1 client (a request waits at most for the 15 others ahead of it).
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kf_model.bench.processes import tree_cpu_seconds
from kf_model.bench.settings import COST, Row, check_target
from kf_model.bench.timing import percentile

if TYPE_CHECKING:
    from kf_model.bench.runner import Bench

CLIENTS = (1, 4, 16)
HIGHER_IS_BETTER = "value / baseline"


def run_clients(calls: Sequence[Callable[[], Any]], per_client: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request seconds) of one thread per call (each its own client object, built beforehand)
    making ``per_client`` calls one after another, all released at once."""
    ready = threading.Barrier(len(calls) + 1)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(call: Callable[[], Any]) -> None:
        ready.wait()
        for _ in range(per_client):
            start = time.perf_counter()
            try:
                call()
            except BaseException as error:  # reported by the main thread
                errors.append(error)
                return
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(call,), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(calls)} concurrent clients failed: {errors[0]!r}")
    return wall, latencies


def gradio_calls(url: str, image: str, bank: str, tasks: Sequence[str], clients: int) -> list[Callable[[], Any]]:
    """``clients`` /predict calls, each through a ``gradio_client.Client`` of its own (built here, in this thread:
    ``redirect_stdout`` is process-wide, so it must not run in the workers)."""
    from gradio_client import Client, handle_file

    with contextlib.redirect_stdout(io.StringIO()):
        made = [Client(url, verbose=False) for _ in range(clients)]
    return [lambda client=client: client.predict(handle_file(image), bank, list(tasks), api_name="/predict")
            for client in made]


class HTTPCall:
    """A /predict call (or ``api``) over a kept-alive HTTP connection of its own (as a browser keeps one)."""

    def __init__(self, url: str, image: str, bank: str, tasks: Sequence[str], api: str = "predict") -> None:
        from kf_model.bench.app_process import GradioHTTP

        self.http, self.args, self.api = GradioHTTP(url), (image, bank, list(tasks)), api

    def __call__(self) -> Any:
        return self.http.predict(*self.args, api=self.api)

    def close(self) -> None:
        self.http.close()


def http_calls(url: str, image: str, bank: str, tasks: Sequence[str], clients: int) -> list[Callable[[], Any]]:
    return [HTTPCall(url, image, bank, tasks) for _ in range(clients)]


def floor_calls(url: str, image: str, bank: str, tasks: Sequence[str], clients: int) -> list[Callable[[], Any]]:
    """/noop: /predict's inputs and HTTP path doing nothing (``KF_BENCH_FLOOR=1``): what Gradio alone costs."""
    return [HTTPCall(url, image, bank, tasks, api="noop") for _ in range(clients)]


CLIENT_KINDS = {  # (endpoint, clients) -> (calls, targeted)
    ("/predict", "HTTP clients"): (http_calls, True),  # cheap clients: the app's own scaling is measured
    ("/noop (Gradio's floor)", "HTTP clients"): (floor_calls, False),  # what Gradio itself costs a request
    ("/predict", "gradio_client clients"): (gradio_calls, False),  # each call costs its client ~4x the app's CPU
}


IN_PROCESS_KINDS = {  # the app started with KF_PREDICT_WORKERS=0: every prediction in the app's own process
    ("/predict, no prediction worker (KF_PREDICT_WORKERS=0)", "HTTP clients"): (http_calls, False),
}


def concurrency(bench: Bench, url: str, pid: int, key: str, image: str, tasks: Sequence[str],
                kinds: dict = CLIENT_KINDS) -> None:
    """Rows per client kind: throughput and p95 at 4 and 16 clients against 1 client; the notes give the CPU time
    each request cost the app process (with its prediction workers) and the clients' process (what bounds
    throughput on a small machine)."""
    requests = max(bench.settings.serving_requests, 4)
    for (endpoint, kind), (make_calls, targeted) in kinds.items():
        results = {}
        for clients in CLIENTS:
            calls = make_calls(url, image, key, tasks, clients)
            run_clients(calls, 1)  # warm-up: each client's first call
            per_client = max(requests // clients, bench.settings.requests_per_client) if clients > 1 else requests
            server, client = tree_cpu_seconds(pid), time.process_time()
            wall, latencies = run_clients(calls, per_client)
            server, client = tree_cpu_seconds(pid) - server, time.process_time() - client
            for call in calls:
                getattr(call, "close", lambda: None)()
            n = len(latencies)
            cpu = (f"{n} requests, app CPU {1000 * server / n:.0f} ms/request, clients' CPU {1000 * client / n:.0f} "
                   "ms/request")
            results[clients] = (n / wall, percentile(latencies, 50), percentile(latencies, 95), cpu)
        _add_rows(bench, key, endpoint, kind, len(tasks), results, targeted, requests)


def _add_rows(bench: Bench, key: str, endpoint: str, kind: str, tasks: int,
              results: dict[int, tuple[float, float, float, str]], targeted: bool, requests: int) -> None:
    rate_1, p50_1, _, cpu_1 = results[1]
    note = f"one client object per thread; at 1 client: {cpu_1}"
    for clients, (rate, p50, p95, cpu) in results.items():
        if clients == 1:
            continue
        last = targeted and clients == max(CLIENTS)
        bench.add(check_target(Row(5, f"{endpoint} throughput, {clients} concurrent {kind} vs 1, {tasks} tasks", key,
                                   rate, "pred/s", rate_1, "1 client", rate / rate_1, HIGHER_IS_BETTER,
                                   "ratio >= 1.5" if last else None,
                                   note=f"p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms at {clients} clients "
                                        f"({cpu}); p50 {1000 * p50_1:.0f} ms at 1; {note}")))
        bench.add(check_target(Row(5, f"{endpoint} p95 at {clients} concurrent {kind} vs p50 at 1, {tasks} tasks", key,
                                   1000 * p95, "ms", 1000 * p50_1, "p50 at 1 client", p95 / p50_1, COST,
                                   f"ratio <= {clients}" if last else None, note=note)))
