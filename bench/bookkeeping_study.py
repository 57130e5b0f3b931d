"""A trial's bookkeeping in a real study against the study's size (issue 12): a Ray study of
N tiny trials (1 epoch, 64 training images, evaluation on), launched in this process, with
the driver's recorder timed at every call Tune's callback makes (`start`, `epoch`, `finish`:
the trial's MLflow run, its Parquet parts, its files). Reports the recorder's time per trial
in the first and the last 10% of the trials, in the order they ended, and the gap between
trial ends; and, to tell where the recorder's time goes, its own thread's CPU time, the
time it sat runnable waiting for a core (Linux schedstat) and Python's garbage collections
inside it; the wrap-up's time and the study folder's size per trial. `bench/bookkeeping.py`
times the Parquet part alone, without Ray.

    python bench/bookkeeping_study.py --trials 1000 --json out.json
    python bench/bookkeeping_study.py --trials 5000 --no-evaluation --spy prof   # issue 28's setting, profiled
    python bench/spy_diff.py prof-first.txt 250 prof-last.txt 500                # where the driver's time grew
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def spec_doc(trials: int, storage: Path, concurrency: int, evaluation: bool = True) -> dict:
    doc = yaml.safe_load((ROOT / "studies" / "digits.yaml").read_text())
    doc.pop("smoke", None)
    doc["name"] = "bookkeeping"
    doc["train"] = {**doc["train"], "epochs": 1, "n_train": 64}
    doc["search"] = {**doc["search"], "warmup_epochs": 0}
    doc["sampler"] = {"name": "random", "seed": 0}
    doc["samples"] = trials
    doc["concurrency"] = concurrency
    if evaluation:
        doc["evaluation"] = {"enabled": True, "max_images": 64, "pictures": False}
    else:  # the objectives that need no evaluation: training's own
        doc["evaluation"] = {"enabled": False}
        doc["objectives"] = [{"metric": "val_acc", "mode": "max"}]
    doc["storage"] = str(storage)
    doc["retries"] = 0
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-evaluation", action="store_true", help="trials without the evaluation step (issue 28's 5,000-trial study)")
    ap.add_argument(
        "--spy", type=Path, default=None,
        help="py-spy the whole driver (all its threads) while trials 5-10%% and 90-100%% of the way end: PREFIX-first.txt, PREFIX-last.txt (collapsed stacks)",
    )  # fmt: skip
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the recorder of the first and last 10%% of trials: PREFIX-first.txt, PREFIX-last.txt")
    ap.add_argument(
        "--snapshot-s", type=float, default=None,
        help="diagnostic: Tune's experiment snapshot period and the state keeper's (default: the pipeline's, Tune's paced 'auto' and 1 s)",
    )  # fmt: skip
    ap.add_argument(
        "--procs", action="store_true",
        help="sample /proc once a second: CPU per process and per driver thread, I/O wait, bytes written, per trial (bench/proc_sampler.py)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.snapshot_s is not None:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(args.snapshot_s)
        from pipeline.record.callback import StateKeeper

        StateKeeper.PERIOD_S = args.snapshot_s

    from pipeline import cli
    from pipeline.record.recorder import StudyRecorder as Recorder

    spent: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)  # the recorder's own thread CPU time
    gc_spent: dict[str, float] = defaultdict(float)  # Python's garbage collections inside it
    gc_clock: list[float] = [0.0, 0.0]  # [total so far, start of the running collection]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_clock[1] = time.perf_counter()
        else:
            gc_clock[0] += time.perf_counter() - gc_clock[1]

    gc.callbacks.append(on_gc)
    waited: dict[str, float] = defaultdict(float)  # runnable but not running (Linux schedstat)

    def run_delay() -> float:
        try:
            with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as fh:
                return int(fh.read().split()[1]) / 1e9
        except OSError:
            return 0.0

    ended: list[tuple[float, str]] = []
    tenth_n = max(1, args.trials // 10)
    profiles = {"first": cProfile.Profile(), "last": cProfile.Profile()} if args.profile else {}

    def which() -> cProfile.Profile | None:
        if not profiles:
            return None
        if len(ended) < tenth_n:
            return profiles["first"]
        return profiles["last"] if len(ended) >= args.trials - tenth_n else None

    # per window ("first", "last", "wrapup"): its py-spy process, the trials ended when it
    # started, and (once stopped) the trials that ended while it ran
    spies: dict[str, subprocess.Popen] = {}
    spy_from: dict[str, int] = {}
    spy_trials: dict[str, int] = {}

    def spy(verb: str, part: str) -> None:
        if verb == "start":
            out = f"{args.spy}-{part}.txt"
            cmd = ["py-spy", "record", "--pid", str(os.getpid()), "--format", "raw", "--rate", "50", "--output", out]
            spies[part] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            spy_from[part] = len(ended)
        elif part in spies and part not in spy_trials:
            spies[part].send_signal(signal.SIGINT)
            spies[part].wait()
            spy_trials[part] = len(ended) - spy_from[part]

    def spy_at(n: int) -> None:
        """py-spy this process while trials 5-10% and 90-100% of the way end, and from the last
        trial's end until `launch` returns (the wrap-up)."""
        if args.spy is None:
            return
        if n == max(1, args.trials // 20):
            spy("start", "first")
        if n == tenth_n:
            spy("stop", "first")
        if n == args.trials - tenth_n:
            spy("start", "last")
        if n == args.trials:
            spy("stop", "last")
            spy("start", "wrapup")

    def timed(name: str):  # noqa: ANN202
        real = getattr(Recorder, name)

        def wrapper(self, trial_id, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            prof = which()
            t0, c0, g0, w0 = time.perf_counter(), time.thread_time(), gc_clock[0], run_delay()
            try:
                if prof is not None:
                    return prof.runcall(real, self, trial_id, *a, **kw)
                return real(self, trial_id, *a, **kw)
            finally:
                t1 = time.perf_counter()
                spent[trial_id] += t1 - t0
                cpu[trial_id] += time.thread_time() - c0
                gc_spent[trial_id] += gc_clock[0] - g0
                waited[trial_id] += run_delay() - w0
                if name == "finish":
                    ended.append((t1, trial_id))
                    spy_at(len(ended))

        setattr(Recorder, name, wrapper)

    for name in ("start", "epoch", "finish"):
        timed(name)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-bookkeeping-study-") as tmp:
        storage = Path(tmp) / "study"
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(
            yaml.safe_dump(spec_doc(args.trials, storage, args.concurrency, not args.no_evaluation), sort_keys=False)
        )
        phases: dict[str, float] = {}
        import pipeline.study as study_mod

        real_run = study_mod.run_study

        def run_and_keep_phases(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            outcome = real_run(*a, **kw)
            phases.update(getattr(outcome, "phases", {}) or {})
            return outcome

        study_mod.run_study = run_and_keep_phases
        sampler = None
        if args.procs:
            from proc_sampler import ProcSampler

            sampler = ProcSampler()
            sampler.start()
        t0, launched = time.perf_counter(), time.time()
        code = cli.main(["launch", str(spec), "--quiet"])
        wall = time.perf_counter() - t0
        if args.spy is not None:
            spy("stop", "wrapup")
            spy("stop", "last")  # trials failed: the last window ends with the study
        if sampler is not None:
            sampler.stop()
        import pyarrow.parquet as pq

        rows = pq.read_table(storage / "trials.parquet").to_pylist()
        sizes: dict[str, int] = defaultdict(int)
        for dirpath, _dirs, files in os.walk(storage):
            top = Path(dirpath).relative_to(storage).parts[:1]
            for f in files:
                try:
                    sizes[top[0] if top else "(top)"] += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
    per_trial = [spent[tid] for _, tid in ended]
    per_cpu = [cpu[tid] for _, tid in ended]
    per_gc = [gc_spent[tid] for _, tid in ended]
    per_wait = [waited[tid] for _, tid in ended]
    tenth = max(1, len(per_trial) // 10)
    gaps = [b[0] - a[0] for a, b in zip(ended, ended[1:])]
    out = {
        "trials": args.trials, "exit": code, "recorded": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows), "wall_s": round(wall, 1),
        "bookkeeping_first_10pct_ms": round(statistics.mean(per_trial[:tenth]) * 1e3, 1),
        "bookkeeping_last_10pct_ms": round(statistics.mean(per_trial[-tenth:]) * 1e3, 1),
        "ratio": round(statistics.mean(per_trial[-tenth:]) / statistics.mean(per_trial[:tenth]), 3),
        "median_first_10pct_ms": round(statistics.median(per_trial[:tenth]) * 1e3, 1),
        "median_last_10pct_ms": round(statistics.median(per_trial[-tenth:]) * 1e3, 1),
        "cpu_first_10pct_ms": round(statistics.mean(per_cpu[:tenth]) * 1e3, 1),
        "cpu_last_10pct_ms": round(statistics.mean(per_cpu[-tenth:]) * 1e3, 1),
        "gc_first_10pct_ms": round(statistics.mean(per_gc[:tenth]) * 1e3, 1),
        "gc_last_10pct_ms": round(statistics.mean(per_gc[-tenth:]) * 1e3, 1),
        "cpu_wait_first_10pct_ms": round(statistics.mean(per_wait[:tenth]) * 1e3, 1),
        "cpu_wait_last_10pct_ms": round(statistics.mean(per_wait[-tenth:]) * 1e3, 1),
        "gap_first_10pct_s": round(statistics.mean(gaps[:tenth]), 3) if gaps else None,
        "gap_median_first_10pct_s": round(statistics.median(gaps[:tenth]), 4) if gaps else None,
        "gap_median_last_10pct_s": round(statistics.median(gaps[-tenth:]), 4) if gaps else None,
        "gap_median_ratio": round(statistics.median(gaps[-tenth:]) / statistics.median(gaps[:tenth]), 3) if gaps else None,
        "gap_mean_ratio": round(statistics.mean(gaps[-tenth:]) / statistics.mean(gaps[:tenth]), 3) if gaps else None,
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "wrap_up_s": round(phases.get("wrap-up", float("nan")), 1),
        "after_last_trial_s": round(t0 + wall - ended[-1][0], 1) if ended else None,
        "folder_bytes": sum(sizes.values()),
        "folder_bytes_per_trial": round(sum(sizes.values()) / max(1, len(rows))),
        "folder_bytes_by_part": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:12]),
        "spy_trials": {k: spy_trials.get(k) for k in ("first", "last") if k in spies},
        "spy_files": sorted(f"{args.spy}-{k}.txt" for k in spies),
        "gap_last_10pct_s": round(statistics.mean(gaps[-tenth:]), 3) if gaps else None,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }  # fmt: skip
    if sampler is not None and len(ended) > 2 * tenth:
        # From the first trial's end, so that Ray's start is left out of the first window.
        out["procs_first_10pct"] = sampler.window(ended[0][0], ended[tenth][0], tenth)
        out["procs_last_10pct"] = sampler.window(ended[-tenth - 1][0], ended[-1][0], tenth)
    print(json.dumps(out))
    for part, prof in profiles.items():
        with open(f"{args.profile}-{part}.txt", "w") as fh:
            pstats.Stats(prof, stream=fh).sort_stats("cumulative").print_stats(60)
    if args.json:
        ends = [round(t - t0, 3) for t, _ in ended]  # seconds since launch, in the order trials ended
        args.json.write_text(json.dumps({**out, "launched_unix": launched, "per_trial_s": per_trial, "end_s": ends}) + "\n")


if __name__ == "__main__":
    main()
