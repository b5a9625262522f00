"""Section 5's app: ``python app.py`` in a subprocess, its HTTP API, peak memory, an import-only probe.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kf_model.bench.banks import BenchBank
from kf_model.bench.processes import app_memory_mb, status_kb
from kf_model.bench.settings import EXAMPLES_DIR, SERVER_START_TIMEOUT_S
from kf_model.utils import REPO_ROOT

IMPORT_PROBE = """
import json, time
import kf_model.ui.app  # noqa: F401  (gradio, torch and kf: what `python app.py` imports before any bank)
status = open('/proc/self/status').read() if __import__('os').path.exists('/proc/self/status') else ''
kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith('VmHWM:')), 0)
print(json.dumps({'vmhwm_kb': kb}))
"""


def vm_hwm_kb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in kB."""
    return status_kb(pid, "VmHWM")


def mixed_workload(http: GradioHTTP, pid: int, requests: dict[str, tuple[str, list[str]]], count: int,
                   samples: int = 20, seed: int = 0) -> list[tuple[int, float]]:
    """``count`` /predict calls cycling over the banks, each on a random non-empty subset of the bank's tasks (so
    the app assembles and caches many networks, as visitors ticking boxes make it), and the memory of the app's
    processes in MB (``processes.app_memory_mb``: the app and its prediction workers) after every
    ``count / samples`` of them: ``[(requests so far, MB), ...]``."""
    import random

    rng = random.Random(seed)
    keys = list(requests)
    every = max(count // samples, 1)
    series = []
    for i in range(1, count + 1):
        key = keys[i % len(keys)]
        image, tasks = requests[key]
        chosen = rng.sample(tasks, rng.randint(1, len(tasks)))
        http.predict(image, key, chosen)
        if i % every == 0 or i == count:
            series.append((i, app_memory_mb(pid)))
    return series


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
                                             self.url.rsplit(":", 1)[1].strip("/")], cwd=REPO_ROOT, env=env, stdout=out,
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
    """(seconds, peak RSS in kB) of a fresh process that only imports the app's code (kf_model.ui.app: gradio, torch,
    kf; app.py itself imports it on first use)."""
    start = time.perf_counter()
    probe = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
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
