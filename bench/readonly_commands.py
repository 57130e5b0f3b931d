"""Wall time of the read-only commands on a finished study (issue 12: each under 2 s): `runs`,
`pareto` and `export` (of the default trial), each the `syncstudy` console entry in a fresh
process, median of `--repeat` runs; with `--mlflow` also the same commands asked of MLflow.

    python bench/readonly_commands.py                  # runs/digits
    python bench/readonly_commands.py runs/digits-smoke --mlflow
    python bench/readonly_commands.py --code /work/main   # another checkout's commands (before)

A folder under a `runs/` folder is named with `--study NAME` from the folder above it (a
moved or copied study is read where it is); any other folder by its `study.yaml`. Prints one
JSON object: the seconds per command, which source answered (the tables when they hold the
finished study, else MLflow), and the load average before and after (a 2-core machine shared
with other work: compare figures taken at a similar load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _where(folder: Path) -> tuple[list[str], Path]:
    """The study's arguments and the folder to run the command in."""
    if folder.parent.name == "runs":
        return ["--study", folder.name], folder.parent.parent
    return [str(folder / "study.yaml")], Path.cwd()


def _time(args: list[str], cwd: Path, code: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.run(  # -P: the folder it runs in is not on the path, `code` is
        [sys.executable, "-P", "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"syncstudy {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return took


def _source(folder: Path, study: list[str], cwd: Path) -> str:
    """Which source `runs` reads for this study: "tables" or "mlflow"."""
    os.chdir(cwd)
    sys.path.insert(0, str(ROOT))
    from pipeline.commands._study import locate_study
    from pipeline.record.finished import finished_trials

    spec, name = (study[0], None) if study[0] != "--study" else (None, study[1])
    ref = locate_study(spec, name)
    found = finished_trials(ref.storage, [m for m, _ in ref.objectives or []], ref.search or {})
    return "tables" if found is not None else "mlflow"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default="runs/digits", type=Path, help="a finished study's folder")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mlflow", action="store_true", help="also time the commands asked of MLflow")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose commands run (default: this one)")
    a = ap.parse_args()
    folder = a.folder.resolve()
    if not (folder / "study.yaml").is_file():
        raise SystemExit(f"{folder}: no study.yaml (not a launched study's folder)")
    study, cwd = _where(folder)
    load_before = os.getloadavg()
    out: dict[str, object] = {"study": str(folder), "code": str(a.code.resolve()), "repeat": a.repeat}
    if a.code.resolve() == ROOT:
        out["source"] = _source(folder, study, cwd)
    for variant in ([[], ["--mlflow"]] if a.mlflow else [[]]):
        timings: dict[str, float] = {}
        for name, command in (("runs", ["runs"]), ("pareto", ["pareto"]), ("export", ["export"])):
            times = []
            for _ in range(a.repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    extra = ["--out", str(Path(tmp) / "out")] if name == "export" else []
                    times.append(_time([*command, *study, *extra, *variant], cwd, a.code.resolve()))
            timings[name] = round(statistics.median(times), 2)
        out["mlflow_s" if variant else "seconds"] = timings
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
