"""Security defaults: servers bind to loopback unless told otherwise, the local Ray refuses
clients without its token, and secrets live in the environment: never in the resolved spec,
the printed output or an error line."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy import services
from pipeline import cli
from pipeline.commands import dashboard

SECRET = "s3cr3t-Pa55-0f-the-db"


def test_servers_bind_to_loopback_by_default() -> None:
    args = cli.build_parser("dashboard").parse_args(["dashboard", "--study", "digits"])
    cmd = dashboard.command(args.host, args.port)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    for fn in (services.start_mlflow_server, services.start_postgres, services.tracking_services):
        assert inspect.signature(fn).parameters["host"].default == "127.0.0.1", fn.__name__
    assert services.build_parser().parse_args(["up", "--root", "x"]).host == "127.0.0.1"


def test_the_dashboards_server_gets_the_store_from_its_environment_not_its_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A command line is readable by every user of the machine; the study keeps `${VAR}`
    # unexpanded at rest and the dashboard expands it only into the server's environment.
    monkeypatch.setenv("SYNCSTUDY_TEST_PW", SECRET)
    uri = "postgresql://study:${SYNCSTUDY_TEST_PW}@127.0.0.1:5432/mlflow"
    assert not any("postgresql" in part or SECRET in part for part in dashboard.command("127.0.0.1", 5000))
    assert dashboard.server_env(uri)["MLFLOW_BACKEND_STORE_URI"] == uri.replace("${SYNCSTUDY_TEST_PW}", SECRET)


_PROBE = r"""
import json, os, subprocess, sys
import ray
from pipeline.ray_local import ray_session

code = '''
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", namespace=None, timeout=10)
    print("ACCEPTED")
except Exception as exc:
    print("REFUSED", type(exc).__name__)
'''
out = {}
with ray_session(None, 1):
    gcs = ray.get_runtime_context().gcs_address
    token = os.environ["RAY_AUTH_TOKEN"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base["HOME"] = sys.argv[1]  # no ~/.ray/auth_token to fall back on
    for name, env in {
        "no token": {},
        "wrong token": {"RAY_AUTH_TOKEN": "0" * 64, "RAY_AUTH_MODE": "token"},
        "auth off": {"RAY_AUTH_MODE": "disabled"},
        "its token": {"RAY_AUTH_TOKEN": token, "RAY_AUTH_MODE": "token"},
    }.items():
        p = subprocess.run([sys.executable, "-c", code, gcs], env={**base, **env},
                           capture_output=True, text=True, timeout=60)
        out[name] = (p.stdout.strip().splitlines() or ["?"])[-1]
    out["shared token file"] = token == (open(os.path.expanduser("~/.ray/auth_token")).read().strip()
                                         if os.path.exists(os.path.expanduser("~/.ray/auth_token")) else None)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_local_ray_refuses_clients_without_its_token(tmp_path: Path) -> None:
    """`launch` without --address starts Ray through `pipeline.ray_local.ray_session`: token
    authentication on, with a token of its own (not the one in ~/.ray shared by every
    process of this user)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS")}
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)], env=env, capture_output=True, text=True, timeout=240,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["its token"] == "ACCEPTED", out
    for name in ("no token", "wrong token", "auth off"):
        assert out[name] == "REFUSED AuthenticationError", (name, out)
    assert out["shared token file"] is False


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_database_password_stays_in_the_environment(
    tmp_path: Path, digits_spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_DB_PASSWORD", SECRET)
    doc = yaml.safe_load(digits_spec.read_text())
    template = f"postgresql://study:${{MLFLOW_DB_PASSWORD}}@127.0.0.1:{_closed_port()}/mlflow"
    doc["tracking"] = {"uri": template}
    doc["smoke"]["storage"] = str(tmp_path / "study")
    spec = tmp_path / "pg.yaml"
    spec.write_text(yaml.safe_dump(doc))

    assert cli.main(["validate", str(spec), "--smoke"]) == 0
    assert cli.main(["validate", str(spec), "--smoke", "--json"]) == 0
    assert cli.main(["launch", str(spec), "--smoke"]) == 2  # the database does not answer
    text = capsys.readouterr()
    shown = text.out + text.err
    assert "127.0.0.1" in text.err and SECRET not in shown, shown
    saved = (tmp_path / "study" / "study.yaml")
    if saved.exists():  # written only once the store answered
        assert SECRET not in saved.read_text()

    from pipeline.spec import dump_resolved, load_spec

    loaded = load_spec(spec, smoke=True)
    assert loaded.tracking.uri and SECRET in loaded.tracking.uri  # used, from the environment
    assert SECRET not in dump_resolved(loaded, tmp_path / "resolved.yaml").read_text()
    assert "${MLFLOW_DB_PASSWORD}" in (tmp_path / "resolved.yaml").read_text()

    doc["tracking"] = {"uri": f"postgresql://study:{SECRET}@127.0.0.1/mlflow"}  # a literal one
    spec.write_text(yaml.safe_dump(doc))
    assert cli.main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "tracking.uri" in err and "holds a password" in err and SECRET not in err
