"""Process-tree memory and CPU sampling, with psutil.

A PySpark driver is a Python process whose JVM is a child (spark-submit execs java), and whose
Python workers (`pyspark.daemon`) are children of the JVM. Sampling the whole tree of the process
we started therefore sees the Python side, the JVM and any Python workers, and tells them apart
by their command line.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


def _scan() -> tuple[dict[int, psutil.Process], dict[int, list[int]]]:
    """Every visible process by pid, and parent pid -> its children's pids, from one pass."""
    processes: dict[int, psutil.Process] = {}
    children: dict[int, list[int]] = {}
    # `ppid()` itself, not `process_iter(["ppid"])`: its `as_dict` doubles the cost of a pass.
    for process in psutil.process_iter():
        try:
            parent = process.ppid()
        except psutil.Error:
            continue  # exited between the listing and the read
        processes[process.pid] = process
        children.setdefault(parent, []).append(process.pid)
    return processes, children


def _descendants_in(children: dict[int, list[int]], pid: int) -> list[int]:
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time a process has used so far (0 if it is gone)."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def rss_kib(process: psutil.Process) -> int:
    """Resident set size of one process in KiB (0 if it is gone)."""
    try:
        return process.memory_info().rss // 1024
    except psutil.Error:
        return 0


def kind(process: psutil.Process) -> str:
    """'java', 'python_worker' (a PySpark worker or its daemon) or 'other'."""
    try:
        args = process.cmdline()
    except psutil.Error:
        return "other"  # gone, a zombie, or not ours to read
    if not args:
        return "other"
    if os.path.basename(args[0]) == "java":
        return "java"
    if any("pyspark.daemon" in a or "pyspark.worker" in a for a in args):
        return "python_worker"
    return "other"


def java_descendants(pid: int) -> list[int]:
    """The JVMs among the live descendants of `pid`."""
    processes, children = _scan()
    return [p for p in _descendants_in(children, pid) if kind(processes[p]) == "java"]


@dataclass
class MemoryPeaks:
    """Peaks over the sampling window, in MiB; the total is the peak of the per-sample sum.

    Also the CPU time of the whole tree (user + system, every process ever seen in it, as last
    sampled): on a shared machine it moves far less with other people's load than wall time.
    """

    main_mib: float = 0.0
    jvm_mib: float = 0.0
    python_workers_mib: float = 0.0
    other_mib: float = 0.0
    total_mib: float = 0.0
    jvms_seen: int = 0
    python_workers_seen: int = 0
    cpu_s: float = 0.0
    samples: int = 0
    _cpu_by_pid: dict[int, float] = field(default_factory=dict, repr=False)
    _jvm_pids: set[int] = field(default_factory=set, repr=False)
    _worker_pids: set[int] = field(default_factory=set, repr=False)

    def to_json(self) -> dict[str, float | int]:
        data = asdict(self)
        for private in ("_cpu_by_pid", "_jvm_pids", "_worker_pids"):
            data.pop(private)
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in data.items()}


class TreeSampler:
    """Samples the RSS of process trees on a background thread until stopped.

    `with TreeSampler(pid) as sampler: ...; sampler.peaks` — the interval is short enough to catch
    a JVM that lives only a few seconds, and long enough not to steal a core from the benchmark.

    `pid` may be several processes we started (concurrent runs): their own RSS is `main_mib`.
    `shared` are processes we did not start but whose work is ours too (the Spark Connect
    server's JVM): their trees count in the totals, their CPU time only from the sampler's
    start, and nobody waits for them to exit.
    """

    def __init__(
        self, pid: int | Sequence[int], interval: float = 0.5, shared: Sequence[int] = ()
    ) -> None:
        self.roots = [pid] if isinstance(pid, int) else list(pid)
        self.pid = self.roots[0]
        self.shared = list(shared)
        self.interval = interval
        self.peaks = MemoryPeaks()
        self._kinds: dict[int, str] = {}
        # Every descendant ever seen: a JVM outlives its Python parent by a few seconds (shutdown
        # hooks delete Spark's temp files), reparented away from our tree but still our cost.
        # A psutil Process is a pid and its start time: a pid that exits and is reused elsewhere
        # is not ours any more (`is_running` is false).
        self._seen: dict[int, psutil.Process] = {}
        # CPU time a shared process had used before we looked: not ours.
        self._cpu_before: dict[int, float] = {}
        processes, children = _scan()
        for server in self.shared:
            for p in [server, *_descendants_in(children, server)]:
                if p in processes:
                    self._cpu_before[p] = cpu_seconds(processes[p])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-{self.pid}", daemon=True)

    def _kind(self, process: psutil.Process) -> str:
        # A pid's command line does not change after exec; cache it once it is known.
        known = self._kinds.get(process.pid)
        if known is None or known == "other":
            known = kind(process)
            self._kinds[process.pid] = known
        return known

    def sample(self) -> None:
        p = self.peaks
        # One pass over every process for every tree of this sample: each pass reads every
        # process's stat, and a smoke run has three samplers at a time on a busy 2-core machine.
        processes, children = _scan()
        main = sum(rss_kib(processes[root]) for root in self.roots if root in processes) / 1024
        by_kind = {"java": 0.0, "python_worker": 0.0, "other": 0.0}
        tree: set[int] = set()
        for root in self.roots:
            tree |= set(_descendants_in(children, root))
        for pid in tree:
            self._seen.setdefault(pid, processes[pid])
        tree |= {pid for pid, process in self._seen.items() if process.is_running()}
        shared: set[int] = set()
        for server in self.shared:
            if server in processes:
                shared |= {server, *_descendants_in(children, server)}
        shared -= tree
        # Ours by identity: a seen process left our tree, or a root, may no longer be listed.
        known = {**processes, **{pid: self._seen[pid] for pid in tree}}
        for pid in [*self.roots, *tree, *shared]:
            if pid not in known:
                continue  # gone: its last sample stands
            used = cpu_seconds(known[pid]) - self._cpu_before.get(pid, 0.0)
            if used > 0:
                p._cpu_by_pid[pid] = max(p._cpu_by_pid.get(pid, 0.0), used)
        p.cpu_s = sum(p._cpu_by_pid.values())
        for child in tree | shared:
            k = self._kind(known[child])
            by_kind[k] += rss_kib(known[child]) / 1024
            if k == "java":
                p._jvm_pids.add(child)
            elif k == "python_worker":
                p._worker_pids.add(child)
        p.main_mib = max(p.main_mib, main)
        p.jvm_mib = max(p.jvm_mib, by_kind["java"])
        p.python_workers_mib = max(p.python_workers_mib, by_kind["python_worker"])
        p.other_mib = max(p.other_mib, by_kind["other"])
        p.total_mib = max(p.total_mib, main + sum(by_kind.values()))
        p.jvms_seen = len(p._jvm_pids)
        p.python_workers_seen = len(p._worker_pids)
        p.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def wait_for_tree(self, timeout: float = 60.0) -> float:
        """After the root processes exited: wait (sampling) until their descendants are gone
        too, so the next measurement does not share the machine with them. Returns seconds
        waited. Shared processes are not waited for."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            seen = list(self._seen.values())  # a C-level copy: the sampling thread adds to it
            if not any(process.is_running() for process in seen):
                break
            time.sleep(0.2)
        return time.monotonic() - started

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def machine() -> dict[str, object]:
    """nproc, memory and CPU model of this machine, for the results table."""
    model = "unknown"
    try:  # psutil does not tell the CPU model
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
