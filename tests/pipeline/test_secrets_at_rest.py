"""No secret at rest (issue 27, item 3): a `${VAR}` of the tracking URI, or a server credential
given in the environment, reaches no file a study writes: not the study folder (its tables,
`study.yaml`, Tune's `tune/` and `tune.good/` pickles, `launch.log`), not the MLflow store
(`mlflow.db`, `mlartifacts/`, a server's database and artifact folder), not a file's name.

Each secret is random per test and planted in the environment only; the walk reads every
byte of every file under the folders named, and every name.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from pipeline.env_refs import MissingVariable, expand

VAR = "SYNCSTUDY_TEST_SECRET"
SMALL = {
    "samples": 2,
    "train": {"epochs": 1, "n_train": 200, "width": 8},
    "evaluation": {"max_images": 60, "pictures": False},
}


def _holding(secret: str, *roots: Path) -> list[str]:
    """Every file under `roots` whose name or bytes hold `secret` (links are not followed)."""
    needle = secret.encode()
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                if secret in name:
                    found.append(f"{path} (its name)")
                elif name in files and path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(str(path))
    return found


def test_the_walk_finds_a_planted_secret(tmp_path: Path) -> None:
    """The check below can fail: a secret in a file's bytes, deep down, or in a name is found."""
    secret = secrets.token_hex(16)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(b"\x80\x04" + secret.encode() + b".")
    (tmp_path / f"db?token={secret}").touch()
    assert len(_holding(secret, tmp_path)) == 2


@pytest.mark.slow
def test_a_sqlite_query_secret_reaches_no_file(
    tmp_path: Path, write_spec, syncstudy, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """`sqlite:///…/tok.db?token=${VAR}`: before, `tok.db?token=<secret>` was created and the
    expanded URI was pickled into tune/tuner.pkl and tune.good/tuner.pkl."""
    secret = secrets.token_hex(16)
    monkeypatch.setenv(VAR, secret)
    storage = tmp_path / "study"
    uri = f"sqlite:///{storage}/tok.db?token=${{{VAR}}}"
    spec = write_spec(tmp_path / "s.yaml", storage=str(storage), tracking={"uri": uri}, **SMALL)
    run = syncstudy("launch", str(spec), "--smoke", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    warning = [ln for ln in run.stderr.splitlines() if "query of a sqlite URI" in ln]
    assert len(warning) == 1 and "?token=***" in warning[0], run.stderr
    assert secret not in run.stdout + run.stderr
    assert (storage / "tok.db").is_file()  # the store is the path without the query
    for name in ("tune/tuner.pkl", "tune.good/tuner.pkl", "launch.log", "trials.parquet", "study.yaml"):
        assert (storage / name).is_file(), name  # the walk covers what Tune and the driver wrote
    assert _holding(secret, tmp_path) == []


@pytest.mark.slow
def test_a_server_credential_reaches_no_file(
    tmp_path: Path, write_spec, syncstudy, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """An MLflow server: its credentials come from MLflow's variables (the URI's user-info is
    refused, below); they reach neither the study folder, nor the server's store, nor a log.
    The server keeps no users: it ignores the basic-auth header the client sends."""
    from deploy.services import start_mlflow_server

    secret = secrets.token_hex(16)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "study")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = start_mlflow_server(
        f"sqlite:///{server_dir / 'server.db'}", server_dir / "artifacts", log_path=server_dir / "server.log"
    )
    storage = tmp_path / "study"
    try:
        spec = write_spec(tmp_path / "s.yaml", storage=str(storage), tracking={"uri": server.url}, **SMALL)
        run = syncstudy("launch", str(spec), "--smoke", cwd=tmp_path)
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    assert secret not in run.stdout + run.stderr
    assert (storage / "tune" / "tuner.pkl").is_file() and any((server_dir / "artifacts").rglob("*"))
    assert _holding(secret, tmp_path) == []


def test_a_password_in_a_server_uri_is_refused_before_anything_is_written(
    tmp_path: Path, write_spec, syncstudy, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """`http://user:${VAR}@host`: refused in one line (the variables above are the way); no
    study folder, nothing sent, the secret not shown."""
    secret = secrets.token_hex(16)
    monkeypatch.setenv(VAR, secret)
    storage = tmp_path / "study"
    spec = write_spec(
        tmp_path / "s.yaml", storage=str(storage), tracking={"uri": f"http://study:${{{VAR}}}@127.0.0.1:9/"}, **SMALL
    )
    run = syncstudy("launch", str(spec), "--smoke", cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stdout + run.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in run.stderr and secret not in run.stdout + run.stderr
    assert not storage.exists() and _holding(secret, tmp_path) == []


# --------------------------------------------------------------------------- PostgreSQL, unit level


def _postgres_spec(tmp_path: Path, write_spec) -> Path:  # noqa: ANN001
    uri = f"postgresql://study:${{{VAR}}}@db.invalid:5432/mlflow"
    return write_spec(tmp_path / "s.yaml", storage=str(tmp_path / "study"), tracking={"uri": uri}, **SMALL)


def test_what_tune_pickles_for_a_postgres_study_holds_the_reference_not_the_password(
    tmp_path: Path, write_spec, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """What a launch hands Tune (the recorder in its callback, the trials' context, the
    state keeper) is pickled with cloudpickle as Tune does; the resolved spec is written as
    launch writes it. None holds the password; the driver's client gets it at connect time."""
    import cloudpickle

    from pipeline.paths import storage_of, target_of
    from pipeline.record.callback import StateKeeper, StudyCallback
    from pipeline.record.recorder import StudyRecorder
    from pipeline.record.tracking import _client
    from pipeline.spec import dump_resolved, load_spec
    from pipeline.study import base_config, tune_metrics
    from pipeline.trial import TrialContext

    secret = secrets.token_hex(16)
    monkeypatch.setenv(VAR, secret)
    spec = load_spec(_postgres_spec(tmp_path, write_spec), smoke=True)
    storage = storage_of(spec)
    target = target_of(spec, storage)
    assert target.uri == f"postgresql://study:${{{VAR}}}@db.invalid:5432/mlflow"
    recorder = StudyRecorder(
        study=spec.name, target=target, parent_id="p", storage=str(storage), base=base_config(spec),
        search_params=dict(spec.search), objectives=[o.metric for o in spec.objectives], total=2,
    )  # fmt: skip
    ctx = TrialContext(
        base=base_config(spec), search=dict(spec.search), evaluation=spec.evaluation, threads=1,
        study=spec.name, upload_to=target, tune_metrics=tune_metrics(spec),
    )  # fmt: skip
    pickled = cloudpickle.dumps([StudyCallback(recorder), StateKeeper(str(storage)), ctx, target])
    assert secret.encode() not in pickled and f"${{{VAR}}}".encode() in pickled
    dump_resolved(spec, tmp_path / "study.yaml")
    assert secret not in (tmp_path / "study.yaml").read_text()
    assert f"${{{VAR}}}" in (tmp_path / "study.yaml").read_text()

    seen: list[str] = []

    class Client:
        def __init__(self, tracking_uri: str, registry_uri: str) -> None:
            seen.append(tracking_uri)

    monkeypatch.setattr("mlflow.MlflowClient", Client)
    _client(cloudpickle.loads(pickled)[3].uri)
    assert seen == [f"postgresql://study:{secret}@db.invalid:5432/mlflow"]


def test_a_process_without_the_variable_is_told_its_name_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial or a resumed driver on a node whose environment lacks the variable."""
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(MissingVariable) as err:
        expand(f"postgresql://study:${{{VAR}}}@db/mlflow")
    assert VAR in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv(VAR, "pw")
    assert expand(f"postgresql://study:${{{VAR}}}@db/mlflow") == "postgresql://study:pw@db/mlflow"


def test_an_unreachable_postgres_store_fails_without_showing_the_password(
    tmp_path: Path, write_spec, syncstudy, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """launch against a closed port: one line, exit 2, the URI shown with `${VAR}`/*** only."""
    from deploy.services import free_port

    secret = secrets.token_hex(16)
    monkeypatch.setenv(VAR, secret)
    uri = f"postgresql://study:${{{VAR}}}@127.0.0.1:{free_port()}/mlflow"
    spec = write_spec(tmp_path / "s.yaml", storage=str(tmp_path / "study"), tracking={"uri": uri}, **SMALL)
    run = syncstudy("launch", str(spec), "--smoke", cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stdout + run.stderr
    assert secret not in run.stdout + run.stderr and "postgresql://***@127.0.0.1" in run.stderr
    assert _holding(secret, tmp_path) == []


