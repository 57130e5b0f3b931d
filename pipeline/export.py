"""Export a study's best (or a named) trial to a portable folder that needs only syncmodel:
weights-only model.pt, the resolved config, metrics.json, a model card (README.md) and a
SHA256SUMS manifest. Written to a temporary folder beside the target, then renamed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.tracking import Tracker, TrialRecord
from syncmodel.checkpoint import file_sha256, read_checkpoint
from syncmodel.errors import SyncStudyError

MANIFEST = "SHA256SUMS"


def metric_mode(metric: str, objectives: list[tuple[str, str]]) -> str:
    """The better direction of `metric`: the study's objective mode, else the catalogue's."""
    for name, mode in objectives:
        if name == metric:
            return mode
    try:
        from pipeline.metrics_catalog import METRICS

        if metric in METRICS:
            return METRICS[metric].mode
    except ImportError:  # pragma: no cover
        pass
    return "min" if metric.endswith(("loss", "_time", "instability")) else "max"


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rank(records: list[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Trials with a finite `metric`, best first (ties: the earlier trial)."""
    have = [r for r in records if finite(r.metrics.get(metric))]
    return sorted(have, key=lambda r: -r.metrics[metric] if mode == "max" else r.metrics[metric])


def choose(
    records: list[TrialRecord], *, trial: str | None, metric: str, mode: str
) -> TrialRecord:
    if trial is not None:
        for r in records:
            if r.trial_id == trial:
                return r
        known = ", ".join(r.trial_id for r in records) or "none"
        raise SyncStudyError(f"--trial {trial}: no such trial in the study (trials: {known})")
    ok = [r for r in records if r.status == "ok"]
    ranked = rank(ok, metric, mode)
    if not ranked:
        raise SyncStudyError(f"no finished trial has a value for {metric!r}")
    return ranked[0]


def _safe_name(name: str) -> str:
    # Artifact names come from the store; none may climb out of the export folder.
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise SyncStudyError(f"refusing artifact name {name!r}: it would escape the output folder")
    return name


def export_trial(
    tracker: Tracker,
    record: TrialRecord,
    out: str | Path,
    *,
    objectives: list[tuple[str, str]],
    chosen_by: str,
) -> Path:
    """Write the folder; returns its path. `out` must not exist or be an empty folder."""
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SyncStudyError(f"--out {out}: exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as dl:
            model = tracker.download(record.run_id, "checkpoint/model.pt", Path(dl))
            shutil.copy2(model, tmp / _safe_name("model.pt"))
            for name in ("config.yaml", "config.json"):
                src = tracker.download(record.run_id, f"config/{name}", Path(dl))
                shutil.copy2(src, tmp / _safe_name(name))
            try:
                report = tracker.download(record.run_id, "evaluation/report.json", Path(dl))
                shutil.copy2(report, tmp / "report.json")
            except Exception:  # noqa: BLE001 - trials without evaluation have none
                pass
        payload = read_checkpoint(tmp / "model.pt")  # weights-only load: refuse anything else
        metrics = {
            "study": tracker.study, "trial_id": record.trial_id, "mlflow_run_id": record.run_id,
            "status": record.status, "chosen_by": chosen_by,
            "metrics": {k: (v if finite(v) else None) for k, v in sorted(record.metrics.items())},
        }  # fmt: skip
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(tracker.study, record, payload, objectives, chosen_by))
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        (tmp / MANIFEST).write_text("".join(f"{file_sha256(p)}  {p.name}\n" for p in files))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def verify(folder: str | Path) -> None:
    """Check every file against SHA256SUMS; `CheckpointError`-style message on a mismatch."""
    folder = Path(folder)
    for line in (folder / MANIFEST).read_text().splitlines():
        digest, name = line.split("  ", 1)
        if file_sha256(folder / _safe_name(name)) != digest:
            raise SyncStudyError(f"{folder / name}: sha256 does not match {MANIFEST}")


def model_card(
    study: str,
    record: TrialRecord,
    payload: dict[str, Any],
    objectives: list[tuple[str, str]],
    chosen_by: str,
) -> str:
    config = payload["config"]
    meta = payload["meta"]
    shown = [m for m, _ in objectives] + [
        m for m in ("test_acc", "val_acc", "interpretability", "spread", "modules") if m not in dict(objectives)
    ]
    rows = "\n".join(
        f"| {m} | {record.metrics[m]:.4f} |" for m in shown if finite(record.metrics.get(m))
    )
    params = "\n".join(f"| {k} | `{v}` |" for k, v in config.items())
    return f"""# {study} — trial {record.trial_id}

A synchronisation-regularised CNN ({config.get('backbone')}, data set `{meta.get('dataset')}`,
{meta.get('num_classes')} classes, {meta.get('in_channels')}×{meta.get('image_size')}×{meta.get('image_size')}
inputs) exported from study `{study}` ({chosen_by}); MLflow run `{record.run_id}`.
Regularised layers: {', '.join(meta.get('layers', []))}.

## Metrics

| metric | value |
|---|---|
{rows}

All final metrics are in `metrics.json`; `report.json` (when present) is the full
interpretability report.

## Use

Needs only `syncmodel` (and torch); the checkpoint is weights-only (`torch.load(...,
weights_only=True)` reads it, so it cannot run code):

```python
from syncmodel.checkpoint import load_checkpoint
from syncmodel.data import load_data
from syncmodel.training import inspect, resolve_device

model, config, meta = load_checkpoint("model.pt")
data = load_data(config)
acc = inspect(model, data.test, meta["layers"], config.epsilon, resolve_device("cpu"))["acc"]
print(acc)  # the logged test_acc (exactly, on CPU)
```

Check the files: `sha256sum -c {MANIFEST}`.

## Training config

| field | value |
|---|---|
{params}
"""
