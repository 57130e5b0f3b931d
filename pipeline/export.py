"""Export a study's best (or a named) trial to a portable folder that needs only syncmodel:
the model.safetensors checkpoint (weights, config, meta), the resolved config, metrics.json, a model card (README.md) and a
SHA256SUMS manifest. Written to a temporary folder beside the target, then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.record.tracking import Tracker, TrialRecord, finite, is_outage
from pipeline.trial_files import TrialFiles
from syncmodel.checkpoint_format import read_checkpoint_file
from syncmodel.errors import SyncStudyError
from syncmodel.files import ensure_folder, file_sha256, temp_folder

MANIFEST = "SHA256SUMS"


class _Missing(SyncStudyError):
    """The run has no such artifact (as opposed to a name that escapes or a store outage)."""


def _inside(path: Path, folder: Path, what: str) -> Path:
    """`path` if it resolves inside `folder`; names from the store never climb out of it."""
    resolved = Path(path).resolve()
    if resolved != folder.resolve() and folder.resolve() not in resolved.parents:
        raise SyncStudyError(f"refusing {what} {str(path)!r}: it would escape {folder}")
    return resolved


class TrialFolder:
    """A trial's files read from its last checkpoint folder in the study folder, where the
    recorder uploaded them to its MLflow run from (`TrialFiles.ARTIFACTS` maps one onto the
    other): the part of `Tracker` that `export_trial` uses, without MLflow."""

    def __init__(self, study: str, folder: Path):
        self.study = study
        self.folder = folder
        self._names = {f"{dest}/{name}" if dest else name: name for name, dest in TrialFiles.ARTIFACTS}

    @classmethod
    def of(cls, study: str, checkpoint: str | None, storage: Path, launched_in: Path) -> TrialFolder | None:
        """The folder of a trial's recorded `checkpoint` (written when the study ran in
        `launched_in`; read where the study folder `storage` is now), if it lies inside the
        study folder and holds every file `export_trial` needs from the run; else None."""
        if not checkpoint:
            return None
        path = Path(checkpoint)
        if path.is_relative_to(launched_in):
            path = storage / path.relative_to(launched_in)
        try:
            path = _inside(path, storage, "checkpoint folder")
        except SyncStudyError:
            return None
        has_model = any((path / name).is_file() for name in (TrialFiles.MODEL, TrialFiles.LEGACY_MODEL))
        return cls(study, path) if has_model and all((path / name).is_file() for name in TrialFiles.CONFIGS) else None

    def _file(self, artifact_path: str) -> Path:
        return self.folder / self._names.get(artifact_path, artifact_path)

    def download(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        target = Path(dst) / artifact_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._file(artifact_path), target)
        return target

    def has_artifact(self, run_id: str, artifact_path: str) -> bool:
        return artifact_path in self._names and self._file(artifact_path).is_file()


def export_trial(
    tracker: Tracker | TrialFolder,
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
    ensure_folder(out.parent, f"--out {out}")
    try:
        tmp = temp_folder(out.parent, out.name)  # mode as mkdir gives, not mkdtemp's 0700
    except OSError as exc:
        raise SyncStudyError(f"--out {out}: cannot write in {out.parent} ({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryDirectory() as dl:
            here = Path(dl)

            def fetch(artifact: str) -> Path:
                try:
                    got = tracker.download(record.run_id, artifact, here)
                except Exception as exc:  # noqa: BLE001 - MLflow: MlflowException, OSError, ...
                    if is_outage(exc):  # the store did not answer: not "the run has no file"
                        raise
                    cause = (str(exc).splitlines() or [""])[0][:160]
                    raise _Missing(
                        f"trial {record.trial_id} (status {record.status}): its MLflow run "
                        f"{record.run_id} has no {artifact} ({exc.__class__.__name__}: {cause})"
                    ) from None
                return _inside(got, here, "artifact")

            # copyfile, not copy2: the files get the umask's mode, not the store's
            legacy = f"checkpoint/{TrialFiles.LEGACY_MODEL}"
            try:
                shutil.copyfile(fetch(f"checkpoint/{TrialFiles.MODEL}"), tmp / TrialFiles.MODEL)
            except _Missing:
                if not tracker.has_artifact(record.run_id, legacy):
                    raise
                # a trial of a release before safetensors: its model.pt is read with torch
                # (weights-only, with its checks) and exported as a model.safetensors
                from syncmodel.checkpoint import convert_checkpoint

                convert_checkpoint(fetch(legacy), tmp / TrialFiles.MODEL)
            for name in TrialFiles.CONFIGS:
                shutil.copyfile(fetch(f"config/{name}"), tmp / name)
            # A trial without evaluation has no report; a report that is there but cannot be
            # fetched is an error (it would otherwise pass for "not evaluated").
            if tracker.has_artifact(record.run_id, f"evaluation/{TrialFiles.REPORT}"):
                shutil.copyfile(fetch(f"evaluation/{TrialFiles.REPORT}"), tmp / TrialFiles.REPORT)
        # a safetensors checkpoint with its digest intact (checked without torch): refuse anything else
        payload = read_checkpoint_file(tmp / TrialFiles.MODEL)
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


def verify(folder: str | Path) -> int:
    """Check an exported folder; returns how many files the manifest covers.

    Refused (`SyncStudyError` naming the folder or file): a missing or malformed SHA256SUMS,
    a manifest entry that is not a plain file name in the folder (``../x``, ``/etc/x``,
    ``sub/x``), a listed file missing or with another sha256, a file the manifest does not
    list, and a model.safetensors that is not an intact syncstudy checkpoint. A folder exported
    by a release before safetensors (a model.pt) is checked with torch (weights-only).
    """
    folder = Path(folder).resolve()
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise SyncStudyError(f"{folder}: no {MANIFEST} (not an exported folder?)")
    listed: dict[str, str] = {}
    try:
        text = manifest.read_text(errors="replace")
    except OSError as exc:
        raise SyncStudyError(f"{manifest}: cannot read ({exc.strerror or exc})") from None
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise SyncStudyError(f"{manifest}:{number}: not a 'SHA256  NAME' line")
        name = _manifest_name(folder, name)
        if name in listed:
            # `sha256sum -c` checks every line: a second line with another digest fails there,
            # while a mapping would keep only the last one
            raise SyncStudyError(f"{manifest}:{number}: {name!r} is listed twice")
        listed[name] = digest
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise SyncStudyError(f"{path}: listed in {MANIFEST} but missing (or not a plain file)")
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise SyncStudyError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if actual != digest:
            raise SyncStudyError(f"{path}: sha256 does not match {MANIFEST} (altered or corrupted)")
    extra = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST and p.name not in listed)
    if extra:
        raise SyncStudyError(f"{folder}: files not in {MANIFEST}: {', '.join(extra)}")
    if TrialFiles.MODEL in listed:
        read_checkpoint_file(folder / TrialFiles.MODEL)  # its own sha256 over the contents, no torch
    elif TrialFiles.LEGACY_MODEL in listed:
        from syncmodel.checkpoint import read_checkpoint  # torch: only an old export's model.pt

        read_checkpoint(folder / TrialFiles.LEGACY_MODEL)
    else:
        raise SyncStudyError(f"{manifest}: lists no {TrialFiles.MODEL}")
    return len(listed)


def _manifest_name(folder: Path, name: str) -> str:
    # Export writes a flat folder: anything with a separator or a parent step could make a
    # checker (or `sha256sum -c`) read outside it.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise SyncStudyError(f"{folder / MANIFEST}: entry {name!r} is not a file of the folder (refused)")
    if len(os.fsencode(name)) > 255:  # NAME_MAX: no such file can exist (resolve() would raise)
        raise SyncStudyError(f"{folder / MANIFEST}: entry {name[:40]!r}... is too long for a file name (refused)")
    try:
        parent = (folder / name).resolve().parent
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise SyncStudyError(f"{folder / MANIFEST}: entry {name!r} cannot be resolved ({exc}) (refused)") from None
    if parent != folder:
        raise SyncStudyError(f"{folder / MANIFEST}: entry {name!r} leads outside the folder (refused)")
    return name


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

Needs only `syncmodel` (and torch); the checkpoint is a safetensors file (tensors only, so it
cannot run code; its header holds the config and meta as JSON):

```python
from syncmodel.checkpoint import load_checkpoint
from syncmodel.data import load_data
from syncmodel.training import inspect, resolve_device

model, config, meta = load_checkpoint("model.safetensors")
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
