"""Where the driver's time per trial goes early and late in a study: py-spy on
`bench/bookkeeping_study.py` (docs/benchmarks.md, bookkeeping in a real study).

Runs the study of tiny trials in a child process, samples its driver with py-spy for two
windows (by default 25-65 s and 150-190 s after the start; the second must lie inside the
study, which for 400 trials runs about 250 s on the 2-core VM), counts the trials that ended
in each window (from the bench's --json), and prints, for the functions whose time per trial
grew the most, the driver's busy time per trial in each window (py-spy samples at 50 a
second, idle threads left out: one sample is 20 ms).
Needs py-spy (`pip install py-spy`; not a dependency of syncstudy) and ptrace permission.

    python bench/driver_profile.py --trials 400
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = 50


def _frame(raw: str) -> str:
    m = re.match(r"(.*) \((.*?):\d+\)", raw)
    return f"{m.group(1)} ({m.group(2).split('site-packages/')[-1]})" if m else raw


def inclusive(path: Path) -> collections.Counter:
    """Samples per function (inclusive) of a py-spy raw (collapsed stacks) file."""
    counts: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        for name in {_frame(f) for f in stack.split(";")}:
            counts[name] += int(n)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--windows", type=float, nargs=4, default=[25, 65, 150, 190], metavar="S")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).is_file():
        sys.exit("bench/driver_profile.py: py-spy not found (pip install py-spy)")
    with tempfile.TemporaryDirectory(prefix="bench-driver-profile-") as tmp:
        out = Path(tmp) / "study.json"
        t0 = time.time()
        study = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bookkeeping_study.py"), "--trials", str(args.trials), "--json", str(out)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        spies = []
        try:
            for i, (start, end) in enumerate(zip(args.windows[::2], args.windows[1::2])):
                time.sleep(max(0.0, t0 + start - time.time()))
                raw = Path(tmp) / f"window{i}.txt"
                subprocess.run(
                    [spy, "record", "-p", str(study.pid), "-d", str(int(end - start)), "-r", str(RATE),
                     "-f", "raw", "-o", str(raw), "--nonblocking"],
                    check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                spies.append((start, end, raw))
            study.wait()
        finally:
            if study.poll() is None:  # py-spy failed: stop the study (SIGTERM: Ray shuts down)
                study.terminate()
                study.wait()
        result = json.loads(out.read_text())
        offset = result["launched_unix"] - t0  # the bench's end times count from its launch
        rows = []
        for start, end, raw in spies:
            ended = sum(1 for t in result["end_s"] if start <= t + offset < end)
            rows.append((start, end, ended, inclusive(raw)))
    (s0, e0, n0, a), (s1, e1, n1, b) = rows[0], rows[-1]
    print(f"window {s0:.0f}-{e0:.0f} s: {n0} trials ended; window {s1:.0f}-{e1:.0f} s: {n1} trials ended")
    top = "TuneController.step (ray/tune/execution/tune_controller.py)"
    ms = 1000 / RATE
    print(f"driver's main loop per trial: {a[top] / max(n0, 1) * ms:.0f} ms -> {b[top] / max(n1, 1) * ms:.0f} ms")
    names = sorted(set(a) | set(b), key=lambda k: -(b[k] / max(n1, 1) - a[k] / max(n0, 1)))
    for name in names[: args.top]:
        print(f"{a[name] / max(n0, 1) * ms:8.1f} -> {b[name] / max(n1, 1) * ms:8.1f} ms/trial  {name[:140]}")


if __name__ == "__main__":
    main()
