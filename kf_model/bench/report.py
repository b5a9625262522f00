"""The results in words: machine, header, the Markdown table the README shows, the report.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from kf_model.bench.settings import Settings
from kf_model.bench.timing import Device


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


def format_quantity(value: float | None, unit: str) -> str:
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
        baseline = "" if r["baseline"] is None else f"{r['baseline_name']}: {format_quantity(r['baseline'], r['unit'])}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['section']} | {r['bank'] or ''} | {r['name']} | {format_quantity(r['value'], r['unit'])} | "
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
