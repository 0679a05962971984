"""What a process costs, read from /proc, and the server's requests, read from its access log."""
from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from attrs import frozen

_TICK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _fields(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    found = {}
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(":")
            if name in names:
                found[name] = int(value.split()[0])
    except OSError:
        pass
    return found


@frozen
class Memory:
    rss_kib: int
    pss_kib: int
    peak_rss_kib: int  # VmHWM: the largest resident set since each process started


def memory(pids: list[int]) -> Memory:
    rss = pss = hwm = 0
    for pid in pids:
        rollup = _fields(Path(f"/proc/{pid}/smaps_rollup"), ("Rss", "Pss"))
        rss += rollup.get("Rss", 0)
        pss += rollup.get("Pss", 0)
        hwm += _fields(Path(f"/proc/{pid}/status"), ("VmHWM",)).get("VmHWM", 0)
    return Memory(rss, pss, hwm)


@frozen
class CpuSample:
    """CPU time (ns, per thread from schedstat, so short windows are exact) and wake-ups."""

    cpu_ns: int
    switches: int  # voluntary + involuntary context switches: how often the threads ran


def cpu(pids: list[int]) -> CpuSample:
    cpu_ns = switches = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                cpu_ns += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            counts = _fields(task / "status", ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
            switches += sum(counts.values())
    return CpuSample(cpu_ns, switches)


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and its waited-for children (exited threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / _TICK


class Sampler(Generic[T]):
    """Calls ``probe`` every ``interval`` seconds on a thread of its own and keeps what it
    returns (None is skipped: the process may be between two lives)."""

    def __init__(self, probe: Callable[[], T | None], interval: float = 1.0) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[T] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def __enter__(self) -> Sampler[T]:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sample = self.probe()
            except OSError:
                continue
            if sample is not None:
                self.samples.append(sample)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# gevent's WSGI access log: ADDRESS - - [DATE] "METHOD PATH HTTP/1.1" STATUS LENGTH SECONDS
_ACCESS = re.compile(r'^(\S+) - - \[[^\]]*\] "(\w+) (\S+) HTTP/[\d.]+" (\d{3}) \S+ ([\d.]+)\s*$')
_IDS = re.compile(r"/\d+")


def endpoint(method: str, path: str) -> str:
    """``GET /api/run/12?include=task`` -> ``GET run/<id>``: a request's kind, for counting."""
    bare = path.split("?", 1)[0].removeprefix("/api/")
    return f"{method} {_IDS.sub('/<id>', '/' + bare)[1:]}"


@frozen
class Requests:
    total: int
    by_endpoint: dict[str, int]
    by_client: dict[str, int]
    server_seconds: float  # the server's own time for them (the log's last column)
    seconds_by_endpoint: dict[str, float]


class AccessLog:
    """REST requests the server logged between two marks (byte offsets in its log file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size

    def between(self, start: int, end: int | None = None) -> Requests:
        with self.path.open("rb") as log:
            log.seek(start)
            data = log.read() if end is None else log.read(end - start)
        endpoints: Counter[str] = Counter()
        clients: Counter[str] = Counter()
        seconds: Counter[str] = Counter()
        for line in data.decode(errors="replace").splitlines():
            match = _ACCESS.match(line)
            if match is None or not match[3].startswith("/api/"):
                continue  # other log lines, and the websocket (one long request)
            endpoints[endpoint(match[2], match[3])] += 1
            clients[match[1]] += 1
            seconds[endpoint(match[2], match[3])] += float(match[5])
        return Requests(sum(endpoints.values()), dict(endpoints), dict(clients), sum(seconds.values()), dict(seconds))
