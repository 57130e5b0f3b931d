"""Where a machine's CPU and the driver's disk writes go during a study, per ended trial:
samples /proc once a second (every process's CPU time by its name, the driver's threads by
theirs, the whole machine's busy and I/O-wait time, the driver's bytes written) and, for
two windows of the study, divides what was spent in each by the trials that ended in it.
Linux only. Used by `bench/bookkeeping_study.py --procs` (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

TICK = os.sysconf("SC_CLK_TCK")


def _stat(path: str) -> tuple[str, float] | None:
    try:
        with open(path) as fh:
            raw = fh.read()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _cpu_by_task(folder: str) -> dict[str, float]:
    """CPU seconds so far per "<id>:<name>" of the processes (or threads) in `folder`. Keyed
    by id, so that two processes of one name are told apart across samples; a process that
    has exited by a window's end is missing from that window (its CPU is not counted)."""
    out: dict[str, float] = {}
    for task in os.listdir(folder):
        if task.isdigit():
            got = _stat(f"{folder}/{task}/stat")
            if got is not None:
                out[f"{task}:{got[0]}"] = got[1]
    return out


def _machine() -> dict[str, float]:
    with open("/proc/stat") as fh:
        v = [int(x) / TICK for x in fh.readline().split()[1:]]
    user, nice, system, _idle, iowait, irq, softirq = v[:7]
    return {"busy": user + nice + system + irq + softirq, "iowait": iowait}


def _written() -> float:
    try:
        with open("/proc/self/io") as fh:
            for line in fh:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0.0


class ProcSampler:
    """Samples /proc every `period_s` in a thread of its own, from start() to stop()."""

    def __init__(self, period_s: float = 1.0):
        self.period_s = period_s
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def sample(self) -> None:
        self.samples.append((time.perf_counter(), {
            "procs": _cpu_by_task("/proc"), "threads": _cpu_by_task("/proc/self/task"),
            "machine": _machine(), "written": _written(),
        }))  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _at(self, t: float) -> dict:
        return min(self.samples, key=lambda s: abs(s[0] - t))[1]

    def window(self, t0: float, t1: float, trials: int) -> dict:
        """Per ended trial in [t0, t1] (perf_counter times, to the nearest sample): CPU ms by
        process name and by driver thread name, the machine's busy and I/O-wait ms, the
        driver's kB written."""
        a, b = self._at(t0), self._at(t1)
        n = max(trials, 1)

        def grouped(key: str) -> dict[str, float]:
            out: dict[str, float] = defaultdict(float)
            for k, v in b[key].items():
                out[k.split(":", 1)[1]] += v - a[key].get(k, 0.0)
            return {k: round(v / n * 1e3, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}

        return {
            "trials": trials, "seconds": round(t1 - t0, 1),
            "process_cpu_ms": grouped("procs"), "driver_thread_cpu_ms": grouped("threads"),
            "machine_busy_ms": round((b["machine"]["busy"] - a["machine"]["busy"]) / n * 1e3, 1),
            "machine_iowait_ms": round((b["machine"]["iowait"] - a["machine"]["iowait"]) / n * 1e3, 1),
            "driver_written_kb": round((b["written"] - a["written"]) / n / 1024, 1),
        }  # fmt: skip
