"""One name per quantity in MLflow: every metric a smoke trial logs is in the catalogue
(pipeline.spec.metrics: METRICS, RECORDED; docs/spec.md lists both), the evaluation's
bookkeeping is params and a tag, and no final is logged under two names."""

from __future__ import annotations

from pathlib import Path

from pipeline.spec.metrics import (
    BOOKKEEPING,
    EVAL_SECONDS_TAG,
    EVAL_SPLIT_TAG,
    METRICS,
    RECORDED,
    catalogue_name,
    mlflow_metrics,
    split_bookkeeping,
)


def test_bookkeeping_is_split_off_and_names_map_to_the_catalogue() -> None:
    logged = mlflow_metrics(
        {"images": 359.0, "neurons": 64, "sync_steps": 12.0, "eval_seconds": 3.456, "epsilon": 0.25,
         "modules": 3.0, "val_acc": 0.5, "best_val_acc": 0.6, "best_epoch": 2.0, "interp_estimate": 0.1},
        {"epsilon": 0.5},
    )  # fmt: skip
    metrics, params, tags = split_bookkeeping(logged)
    assert metrics == {"eval/modules": 3.0, "val_acc": 0.5, "best_val_acc": 0.6, "best_epoch": 2.0}
    assert params == {"eval/images": "359", "eval/neurons": "64", "eval/sync_steps": "12", "eval/epsilon": "0.25"}
    assert tags == {EVAL_SECONDS_TAG: "3.46"}
    names = {
        "epoch/lr": "lr", "epoch/val_acc": "val_acc", "test/spread": "spread", "eval/conv3/modules": "modules",
        "eval/accuracy_class_7": "accuracy_class_{k}", "eval/conv3/accuracy_class_1": "accuracy_class_{k}",
    }  # fmt: skip
    assert {k: catalogue_name(k) for k in names} == names


def test_every_metric_a_smoke_trial_logs_is_catalogued(smoke_study: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], "tags.`syncstudy.role` = 'trial' and tags.`syncstudy.status` = 'ok'")
    assert runs
    for run in runs:
        keys = set(run.data.metrics)
        assert {"val_acc", "epoch/val_acc", "epoch/lr", "eval/modules"} <= keys, keys
        missing = {k for k in keys if catalogue_name(k) not in METRICS and catalogue_name(k) not in RECORDED}
        assert not missing, missing
        # bookkeeping: params and a tag, not metrics
        assert not {k for k in keys if k.startswith("eval/") and k.rpartition("/")[2] in (*BOOKKEEPING, "eval_seconds")}
        assert {"eval/images", "eval/neurons", "eval/sync_steps"} <= set(run.data.params)
        assert float(run.data.tags[EVAL_SECONDS_TAG]) > 0
        assert run.data.tags[EVAL_SPLIT_TAG] == "val"  # the split eval/images counts (evaluation.split)
        # one name per quantity: a final under one name (an epoch/ series is another quantity)
        finals = [catalogue_name(k) for k in keys if not k.startswith("epoch/") and "accuracy_class_" not in k]
        assert len(finals) == len(set(finals)), sorted(finals)
        assert not {"eval/best_val_acc", "eval/interp_estimate", "eval/accuracy"} & keys
