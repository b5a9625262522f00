"""What ``/proc`` says about the app's processes (Linux; NaN or nothing elsewhere): CPU seconds, children (the
prediction workers), and memory counted the way the machine pays for it.

Memory of several processes: each process's private pages (``Private_Clean`` + ``Private_Dirty`` of
``/proc/<pid>/smaps_rollup``) plus the pages they share, once. The app and its workers share the same libraries
(torch's alone are ~300 MB resident in each), so adding their RSS would count those pages once per process, and
adding their PSS would hand part of them to any other process that maps them (the bench's own torch). The shared
part is taken as the largest process's shared pages: the workers map the libraries the app maps.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def _stat_fields(stat: Path) -> list[str]:
    """The fields of a ``/proc/<pid>/stat`` after the command name (which may hold spaces and parentheses)."""
    return stat.read_text().rsplit(")", 1)[1].split()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``: the app's prediction workers (and multiprocessing's helper)."""
    children = []
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            if int(_stat_fields(entry)[1]) == pid:
                children.append(int(entry.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return children


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``); NaN elsewhere."""
    try:
        fields = _stat_fields(Path(f"/proc/{pid}/stat"))
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (the app and its prediction workers)."""
    return process_cpu_seconds(pid) + sum(process_cpu_seconds(child) for child in child_pids(pid))


def wait_until_children_idle(pid: int, timeout_s: float = 60.0, quiet_s: float = 2.0) -> None:
    """Wait until the children of ``pid`` have started and stopped using CPU (workers done loading their banks)."""
    deadline, last, since = time.monotonic() + timeout_s, -1.0, time.monotonic()
    while time.monotonic() < deadline:
        children = child_pids(pid)
        used = sum(process_cpu_seconds(child) for child in children)
        if used != last:
            last, since = used, time.monotonic()
        elif children and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.25)


def status_kb(pid: int, key: str) -> float:
    """A memory figure of ``/proc/<pid>/status`` in kB (``VmHWM``, ``VmRSS``); NaN elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


@dataclass(frozen=True)
class Memory:
    """One process's resident pages in kB: its own (private) and those it shares with other processes."""

    private_kb: float
    shared_kb: float


def process_memory(pid: int) -> Memory | None:
    """From ``/proc/<pid>/smaps_rollup``; None where it cannot be read (gone, or not Linux)."""
    try:
        fields = {line.split(":")[0]: float(line.split()[1])
                  for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:] if ":" in line}
    except (OSError, ValueError, IndexError):
        return None
    return Memory(fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0),
                  fields.get("Shared_Clean", 0.0) + fields.get("Shared_Dirty", 0.0))


def combined_mb(memories: list[Memory]) -> float:
    """MB that processes take together: every private page, and the shared pages once (the largest set)."""
    if not memories:
        return float("nan")
    return (sum(m.private_kb for m in memories) + max(m.shared_kb for m in memories)) / 1024


def app_memory_mb(pid: int) -> float:
    """:func:`combined_mb` of the app and its children (its prediction workers); VmRSS where smaps is missing."""
    memories = [m for m in map(process_memory, [pid, *child_pids(pid)]) if m is not None]
    return combined_mb(memories) if memories else status_kb(pid, "VmRSS") / 1024
