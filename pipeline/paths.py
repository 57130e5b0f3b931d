"""Where a study's things live: its storage folder, the files in it, its tracking target.
Read by the study (pipeline.study) and by the read-only commands, which import nothing else
of the orchestration."""

from __future__ import annotations

from pathlib import Path

from pipeline.record.tracking import TrackingTarget, resolve_target
from pipeline.spec.types import StudySpec

EXPERIMENT_DIR = "tune"  # Tune's experiment folder inside the study's storage
SPEC_FILE = "study.yaml"  # the resolved spec, written at the first launch
GOOD_STATE_DIR = "tune.good"  # the last whole copy of Tune's state files (pipeline.record.state)
# Also in the folder: `.lock` (pipeline.lock: one driver at a time) and `instance.json`
# (pipeline.record.identity: the study instance's id, which its MLflow runs carry).


def storage_of(spec: StudySpec) -> Path:
    return Path(spec.storage or Path("runs") / spec.name).expanduser().resolve()


def target_of(spec: StudySpec, storage: Path) -> TrackingTarget:
    # The URI as written (`${VAR}` kept): the target travels in Tune's pickles and into
    # messages; it is expanded where a connection is made (pipeline.env_refs).
    return resolve_target(
        spec.tracking.uri_source or spec.tracking.uri, spec.tracking.experiment or spec.name,
        storage, spec.tracking.artifact_location,
    )  # fmt: skip
