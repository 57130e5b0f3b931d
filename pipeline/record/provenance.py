"""A trial's provenance (issue 24): the commit of the code that trained it (+ whether the
checkout had uncommitted changes), the torch version, the device and the data generator's
version, measured in the trial's own process (`trial_provenance`, called by pipeline.trial) and
recorded by the driver as trials.parquet's columns and the child run's `syncstudy.<key>` tags.

The trial hands them over as string keys of its results (every epoch's and the final one, so
a trial the scheduler stops, or one that fails after an epoch, still carries them) and, for a
trial that fails before its first result, as a note on its exception, which Ray keeps in the
error trace the driver reads (`from_error_text`).

No torch here: `runs` and `pareto` read the tags (`off_commit`) without importing it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# trials.parquet's columns = the trial's result keys; MLflow tags are "syncstudy.<key>".
KEYS = ("commit", "dirty", "torch", "device", "data_version")
TAG_PREFIX = "syncstudy."
TAG_COMMIT = TAG_PREFIX + "commit"
NOTE_PREFIX = "syncstudy provenance: "  # one line of the error trace; no exception-line look


def trial_provenance(dataset: str, device: Any) -> dict[str, str | bool | None]:
    """Measured in the trial's process: `device` is the torch device it trains on."""
    import torch

    from syncmodel.provenance import data_version, device_name, git_commit

    commit, dirty = git_commit()  # cached per process: one git call per worker, not per trial
    return {
        "commit": commit,
        "dirty": dirty if commit is not None else None,
        "torch": torch.__version__,
        "device": device_name(device),
        "data_version": data_version(dataset),
    }


def of_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance keys a trial's result carries ({} for none: a trial that failed before
    its first result, or one recorded before trials reported them)."""
    return {k: result[k] for k in KEYS if result.get(k) is not None}


def note(values: Mapping[str, Any]) -> str:
    """The line a failing trial adds to its exception (`BaseException.add_note`)."""
    return NOTE_PREFIX + json.dumps(dict(values), sort_keys=True)


def from_error_text(text: str | None) -> dict[str, Any]:
    """The provenance a failed trial's error trace carries in its `note` line, else {}."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith(NOTE_PREFIX):
            try:
                found = json.loads(line[len(NOTE_PREFIX) :])
            except ValueError:
                return {}
            return of_result(found) if isinstance(found, dict) else {}
    return {}


def tags(values: Mapping[str, Any]) -> dict[str, str]:
    """`syncstudy.<key>` tags (MLflow's values are text; unknown ones are left out)."""
    out: dict[str, str] = {}
    for k in KEYS:
        v = values.get(k)
        if v is not None:
            out[TAG_PREFIX + k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def study_commit(commits: Iterable[str | None]) -> str | None:
    """The commit most of a study's trials were trained by (ties: the one met first, i.e.
    the earlier-launched trial's); None when no trial says."""
    counts = Counter(c for c in commits if c)
    return max(counts, key=counts.__getitem__) if counts else None  # max keeps the first of ties


def off_commit(records: Iterable[Any]) -> tuple[str | None, set[str]]:
    """(the study's most common commit, the trial ids trained by another or an unknown one)
    of `TrialRecord`s (their `syncstudy.commit` tags). A study whose trials carry no commit
    (older than this record, or not run from a checkout) marks none."""
    records = list(records)
    commit_of = {r.trial_id: (r.tags or {}).get(TAG_COMMIT) for r in records}
    common = study_commit(commit_of.values())
    if common is None:
        return None, set()
    return common, {t for t, c in commit_of.items() if c != common}


OTHER_MARK = "†"


def other_commit_line(common: str | None, count: int) -> str:
    """The footnote of the trials marked OTHER_MARK (`syncstudy runs` and `pareto`)."""
    return (
        f"{OTHER_MARK} = {count} trial{'s' if count != 1 else ''} trained by another commit than "
        f"most of the study's ({(common or '')[:12]}), or by code of no known commit: compare with care"
    )
