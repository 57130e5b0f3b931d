"""Tracking URIs: credentials in any part of one are redacted wherever a URI is shown and never
sent to a resolver (issue 14, item 9); artifacts stay in the study's folder whatever the
database store's location (item 10)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.record.tracking import TrackingError, resolve_target
from pipeline.redact import redact, userinfo

TOKEN = "ghp_Zs3cr3tT0kenValue"

MINIMAL = """\
name: t
train: {epochs: 2}
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
objectives:
  - {metric: test_acc, mode: max}
storage: %s
"""


@pytest.mark.parametrize(
    "text, shown",
    [
        (f"http://{TOKEN}@mlflow.example:5000/", "http://***@mlflow.example:5000/"),
        (f"https://{TOKEN}:x-oauth-basic@host/x", "https://***@host/x"),
        ("postgresql://study:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        (f"https://host/api?token={TOKEN}&run=1", "https://host/api?token=***&run=1"),
        (f"https://host/?a=1&X-Amz-Signature={TOKEN}", "https://host/?a=1&X-Amz-Signature=***"),
        (f"error: tracking URI 'http://{TOKEN}@h' is unreachable", "error: tracking URI 'http://***@h' is unreachable"),
        ("sqlite:////runs/x/mlflow.db", "sqlite:////runs/x/mlflow.db"),
        ("http://127.0.0.1:5000/#/experiments?x=1", "http://127.0.0.1:5000/#/experiments?x=1"),
        ("user@host: no URI here; key facts", "user@host: no URI here; key facts"),
    ],
)
def test_redact_removes_every_credential_part(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_userinfo() -> None:
    assert userinfo(f"http://{TOKEN}@h/") == TOKEN
    assert userinfo("postgresql://u:p@h/db") == "u:p"
    assert userinfo("http://h:5000/") == ""


@pytest.fixture
def resolver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name handed to the resolver (and none resolved: the test needs no network)."""
    calls: list[str] = []

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list[object]:
        calls.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


@pytest.mark.parametrize("uri", [f"http://{TOKEN}@mlflow.example/", f"https://{TOKEN}:x@mlflow.example/"])
def test_launch_refuses_a_server_uri_with_user_info(
    uri: str, tmp_path: Path, resolver_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(MINIMAL % (tmp_path / "study"))
    rc = cli.main(["launch", str(spec), "--tracking-uri", uri])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1
    assert "tracking.uri: holds a user name or token before '@'" in err
    assert "MLFLOW_TRACKING_TOKEN" in err
    assert TOKEN not in out + err
    assert not any(TOKEN in host for host in resolver_calls)
    assert not (tmp_path / "study").exists()


def test_read_commands_refuse_a_server_uri_with_user_info(
    tmp_path: Path, resolver_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["runs", "--study", "x", "--tracking-uri", f"http://{TOKEN}@mlflow.example/"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "holds a user name or token" in err
    assert TOKEN not in out + err
    assert not any(TOKEN in host for host in resolver_calls)


def test_resolve_target_refuses_user_info_for_a_server(tmp_path: Path) -> None:
    with pytest.raises(TrackingError) as err:
        resolve_target(f"https://{TOKEN}@h/", "x", tmp_path)
    assert TOKEN not in str(err.value) and "https://***@h/" in str(err.value)


def test_a_database_user_name_is_allowed_but_never_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(MINIMAL % (tmp_path / "study") + f"tracking: {{uri: 'postgresql://{TOKEN}@db.example/mlflow'}}\n")
    assert cli.main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "postgresql://***@db.example/mlflow" in out and TOKEN not in out


# --------------------------------------------------------------------------- artifacts (item 10)


def test_artifacts_stay_in_the_study_folder_with_a_database_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit sqlite store outside the study folder: MLflow's default artifact root is
    ./mlruns of the current folder; the experiment is created with <storage>/mlartifacts."""
    from pipeline.record.tracking import Tracker, check_target

    cwd, storage, db = tmp_path / "cwd", tmp_path / "study", tmp_path / "elsewhere" / "mlflow.db"
    cwd.mkdir()
    db.parent.mkdir()
    monkeypatch.chdir(cwd)
    target = resolve_target(f"sqlite:///{db}", "x", storage)
    check_target(target)
    tracker = Tracker(target, "x")
    run = tracker.trial_run("t1", tracker.parent_run({}, {}), {"lr": 0.1})
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    assert tracker.finish_trial(run, status="ok", metrics={"test_acc": 0.5}, step=1, artifacts=[(weights, "checkpoint")])
    assert not (cwd / "mlruns").exists()
    assert [p.read_bytes() for p in (storage / "mlartifacts").rglob("model.pt")] == [b"weights"]
