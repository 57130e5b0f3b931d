"""The study's parent run holds its results at the end (pipeline.record.summary,
`Tracker.finish_parent`), and each child run its note, provenance and data set."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import cli
from pipeline.record.summary import summarize

DIGITS = Path(__file__).resolve().parents[2] / "studies" / "digits.yaml"


def _args(storage: Path) -> list[str]:
    return [str(DIGITS), "--smoke", "--tracking-uri", f"sqlite:///{storage / 'mlflow.db'}"]


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    capsys.readouterr()
    assert cli.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _client(storage: Path):  # noqa: ANN202 - MlflowClient
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")


def _parent(storage: Path):  # noqa: ANN202 - mlflow Run
    client = _client(storage)
    exp = client.get_experiment_by_name("digits")
    (run,) = client.search_runs([exp.experiment_id], "tags.`syncstudy.role` = 'study'")
    return client, exp, run


def test_summary_on_hand_built_trials() -> None:
    t = lambda tid, a, b, status="ok": SimpleNamespace(trial_id=tid, status=status, metrics={"acc": a, "interp": b})  # noqa: E731
    records = [t("a", 0.9, 0.1), t("b", 0.8, 0.5), t("c", 0.7, 0.4), t("d", 0.95, 0.9, "stopped"), t("e", 0.9, 0.1)]
    s = summarize(records, [("acc", "max"), ("interp", "max")])
    assert s.best == {"acc": (0.9, "a"), "interp": (0.5, "b")}  # ties: the earlier trial; stopped ones never count
    assert s.front == ["a", "e", "b"]  # c is beaten by b; a and e tie (neither dominates)
    assert s.metrics()["pareto_front_size"] == 3 and s.metrics()["trials_finished"] == 4


def test_parent_run_metrics_equal_pareto_and_runs(smoke_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, _, parent = _parent(smoke_study)
    front = _cli_json(capsys, "pareto", *_args(smoke_study))
    assert parent.data.metrics["pareto_front_size"] == len(front)
    assert parent.data.tags["syncstudy.pareto_front"].split(",") == [r["trial_id"] for r in front]
    for metric in ("val_acc", "interpretability"):
        ranked = _cli_json(capsys, "runs", *_args(smoke_study), "--sort", metric)
        best = ranked[0]
        assert parent.data.metrics[f"best/{metric}"] == best["metrics"][metric]
        assert parent.data.tags[f"syncstudy.best.{metric}"] == best["trial_id"]
    on_front = {r["trial_id"] for r in front}
    for child in client.search_runs([parent.info.experiment_id], "tags.`syncstudy.role` = 'trial'"):
        want = "true" if child.data.tags["syncstudy.trial_id"] in on_front else "false"
        assert child.data.tags["syncstudy.pareto"] == want


def test_parent_run_artifacts_and_experiment_tags(smoke_study: Path) -> None:
    client, exp, parent = _parent(smoke_study)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.png", "trials.json"} <= names
    png = Path(client.download_artifacts(parent.info.run_id, "pareto.png", str(smoke_study.parent)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "trials.json", str(smoke_study.parent))).read_text())
    assert "trial_id" in table["columns"] and len(table["data"]) == parent.data.metrics["trials"]
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("focus strength")


def test_child_runs_carry_note_provenance_and_dataset(smoke_study: Path) -> None:
    client, _, parent = _parent(smoke_study)
    for child in client.search_runs([parent.info.experiment_id], "tags.`syncstudy.role` = 'trial'"):
        tags = child.data.tags
        assert "lambda_focus" in tags["mlflow.note.content"] and " → " in tags["mlflow.note.content"]
        assert tags["mlflow.source.name"] == "syncstudy launch" and tags["mlflow.user"]
        (ds,) = child.inputs.dataset_inputs
        assert ds.dataset.name == "digits"
        assert [(t.key, t.value) for t in ds.tags] == [("mlflow.data.context", "training")]
