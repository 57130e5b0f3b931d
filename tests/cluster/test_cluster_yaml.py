"""cluster.yaml passes the Ray cluster launcher's own validation (its JSON schema and
checks, after the AWS defaults are merged in, as `ray up` does) and keeps its promises:
GPU workers that scale from zero, token auth, no open dashboard or MLflow port."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from deploy.services import build_parser

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _gpu_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    head = config["head_node_type"]
    return {
        name: node
        for name, node in config["available_node_types"].items()
        if name != head and node.get("resources", {}).get("GPU", 0) >= 1
    }


def test_validates_with_the_launcher_schema(raw: dict[str, Any]) -> None:
    validate_config(copy.deepcopy(raw))  # as written
    validate_config(prepare_config(copy.deepcopy(raw)))  # as `ray up` sees it


def test_the_validation_catches_a_typo(raw: dict[str, Any]) -> None:
    import jsonschema

    bad = copy.deepcopy(raw)
    head = bad["head_node_type"]
    bad["available_node_types"][head]["min_wrokers"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(bad)


def test_gpu_workers_scale_from_zero(prepared: dict[str, Any]) -> None:
    gpu = _gpu_types(prepared)
    assert gpu, "no worker type declares a GPU"
    for name, node in gpu.items():
        assert node["min_workers"] == 0, name
        assert node["max_workers"] >= 1, name
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert prepared["provider"]["type"] == "aws"


def test_ray_pin_matches_the_installed_ray(raw: dict[str, Any]) -> None:
    setup = " ".join(raw["setup_commands"])
    assert f"ray[default]=={ray.__version__}" in setup


def test_token_auth_on_every_node(raw: dict[str, Any]) -> None:
    assert any(remote.endswith("/.ray/auth_token") for remote in raw["file_mounts"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in raw[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key


def test_nothing_but_ssh_is_opened_and_dashboard_stays_on_loopback(raw: dict[str, Any]) -> None:
    assert not raw["provider"].get("security_group", {}).get("IpPermissions")
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0/0" not in CLUSTER_YAML.read_text()


def test_head_runs_mlflow_on_postgres_and_workers_get_its_uri(raw: dict[str, Any]) -> None:
    (services,) = [c for c in raw["head_start_ray_commands"] if "deploy.services" in c]
    argv = shlex.split(services.split("deploy.services", 1)[1])
    args = build_parser().parse_args(argv)  # the line is one our CLI accepts
    assert args.command == "up" and args.port == 5000
    worker_start = " ".join(raw["worker_start_ray_commands"])
    assert f"MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:{args.port}" in worker_start
    assert "postgresql" in " ".join(raw["head_setup_commands"])


def test_no_secret_in_the_file(raw: dict[str, Any]) -> None:
    # A password or key may only be read from somewhere ($VAR, $(command)), never written.
    literal = re.compile(r"(password|secret_access_key|auth_token)\w*\s*[:=]\s*(?![$\s])", re.I)
    for line in CLUSTER_YAML.read_text().splitlines():
        if not line.lstrip().startswith("/home/"):  # file_mounts: remote path: local path
            assert not literal.search(line), line
    assert "RAY_AUTH_TOKEN=" not in CLUSTER_YAML.read_text()


def test_the_on_prem_variant_of_docs_cluster_md_validates(raw: dict[str, Any]) -> None:
    local = copy.deepcopy(raw)
    local["provider"] = {"type": "local", "head_ip": "10.0.0.10", "worker_ips": ["10.0.0.11"]}
    local["auth"] = {"ssh_user": "ubuntu", "ssh_private_key": "~/.ssh/id_ed25519"}
    del local["available_node_types"], local["head_node_type"]
    validate_config(prepare_config(local))
