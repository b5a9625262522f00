"""A bounded load check: 100 predictions through gradio_client, 8 in flight at a time, no failures.

Each worker thread has its own ``Client``, as the README tells API users: one ``Client`` shared by several
threads races with its own event stream (about 1 run in 10 lost an answer); the server is not at fault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.app_fixtures import running_app, write_images

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

REQUESTS = 100
IN_FLIGHT = 8


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_app(tmp_path_factory.mktemp("banks")) as url:
        yield url


def test_100_predictions_8_at_a_time(app_url: str, tmp_path: Path) -> None:
    images = write_images(tmp_path)
    jobs = []  # a mix of banks, task sets and image kinds
    kinds = ["grey.png", "on_white.png", "rgba.png", "palette.png", "cmyk.jpg", "i16.png"]
    for i in range(REQUESTS):
        if i % 2:
            jobs.append((images[kinds[i % len(kinds)]], "dsprites", [["shape"], ["scale", "pos_x"],
                                                                     ["shape", "orientation", "pos_y"]][i % 3]))
        else:
            jobs.append((images[kinds[i % len(kinds)]], "fashion-mnist", [["coat"], ["bag", "dress", "sneaker"]][
                (i // 2) % 2]))
    local = threading.local()
    clients: list[Client] = []

    def call(job: tuple[Path, str, list[str]]) -> tuple[dict, float]:
        if not hasattr(local, "client"):  # one Client per worker thread
            local.client = Client(app_url, verbose=False)
            clients.append(local.client)
        start = time.perf_counter()
        result = local.client.predict(handle_file(str(job[0])), job[1], job[2], api_name="/predict")
        return result, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        results = list(pool.map(call, jobs))
    elapsed = time.perf_counter() - start

    assert len(results) == REQUESTS and 1 <= len(clients) <= IN_FLIGHT
    for (_, _, tasks), (result, _) in zip(jobs, results):
        assert set(result) == {*tasks, "_input"}  # the tasks, and the report on the input
        for probabilities in (result[task] for task in tasks):
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    latencies = sorted(seconds for _, seconds in results)
    print(f"\n{REQUESTS} predictions, {IN_FLIGHT} in flight: {elapsed:.1f} s, {REQUESTS / elapsed:.1f}/s, "
          f"p50 {latencies[REQUESTS // 2]:.2f} s, max {latencies[-1]:.2f} s")

    # still healthy: a refusal, then a normal answer
    client = clients[0]
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(images["text.png"])), "dsprites", ["shape"], api_name="/predict")
    assert client.predict(handle_file(str(images["grey.png"])), "dsprites", ["shape"], api_name="/predict")
