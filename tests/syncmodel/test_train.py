"""Training loop: determinism, divergence, checkpoints, resume, the `train` command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from syncmodel.checkpoint import load_checkpoint, read_checkpoint
from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.errors import CheckpointError
from syncmodel.training import inspect, train

FAST = dict(dataset="digits", n_train=300, epochs=2, width=8, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_data(TrainConfig(**FAST))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_identical_runs_on_cpu(digits):
    config = TrainConfig(**FAST, lambda_focus=0.1, coupling_K=0.1)
    a, b = train(config, data=digits), train(config, data=digits)
    for key in ("train_loss", "focus_loss", "sync_loss", "val_acc"):
        assert [r[key] for r in a.history] == [r[key] for r in b.history]
    wa, wb = _weights(a.model), _weights(b.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_reports_the_documented_metrics(digits):
    result = train(TrainConfig(**FAST), data=digits)
    assert result.status == "ok"
    for key in ("test_acc", "val_acc", "train_acc", "ce_loss", "focus_loss", "sync_loss",
                "spread", "dead_fraction", "neighbours", "train_time", "epochs_run"):
        assert key in result.metrics, key
    assert result.metrics["epochs_run"] == 2
    assert [r["epoch"] for r in result.history] == [1, 2]
    # Zero strengths: the regularisers are not even computed.
    assert result.metrics["focus_loss"] == 0.0 and result.metrics["sync_loss"] == 0.0


def test_final_metrics_name_the_best_validation_epoch(digits):
    result = train(TrainConfig(**{**FAST, "epochs": 3}), data=digits)
    vals = [r["val_acc"] for r in result.history]
    assert result.metrics["best_val_acc"] == max(vals)
    assert result.metrics["best_epoch"] == vals.index(max(vals)) + 1  # first of ties
    assert result.metrics["val_acc"] == vals[-1]  # the reported result stays the last epoch


def test_non_finite_loss_ends_the_run_as_diverged(digits):
    bad = load_data(TrainConfig(**FAST))
    bad.train.images[0] = float("nan")
    result = train(TrainConfig(**FAST), data=bad)
    assert result.status == "diverged"
    assert "non-finite" in result.error
    assert "test_acc" not in result.metrics


def test_checkpoint_reloads_to_the_same_test_accuracy(digits, tmp_path):
    result = train(TrainConfig(**FAST), data=digits, out_dir=tmp_path)
    model, config, meta = load_checkpoint(result.checkpoint)
    assert config == result.config and meta["epoch"] == 2
    again = inspect(model, digits.test, meta["layers"], config.epsilon, torch.device("cpu"))
    assert again["acc"] == result.metrics["test_acc"]


def test_checkpoint_holds_only_weights_and_plain_data(digits, tmp_path):
    result = train(TrainConfig(**{**FAST, "epochs": 1}), data=digits, out_dir=tmp_path)
    import safetensors

    assert result.checkpoint.name == "model.safetensors"
    with safetensors.safe_open(str(result.checkpoint), framework="pt") as f:  # tensors and strings only
        assert set(f.metadata()) == {"format", "config", "meta", "sha256"}
        assert set(f.keys()) == set(result.model.state_dict())


def test_truncated_checkpoint_is_refused_with_the_file_named(digits, tmp_path):
    result = train(TrainConfig(**{**FAST, "epochs": 1}), data=digits, out_dir=tmp_path)
    data = result.checkpoint.read_bytes()
    result.checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(result.checkpoint)):
        read_checkpoint(result.checkpoint)


def test_resume_continues_exactly_where_the_run_stopped(digits, tmp_path):
    config = TrainConfig(**{**FAST, "epochs": 3}, lambda_focus=0.1, coupling_K=0.1)
    straight = train(config, data=digits)
    stopped = train(config, data=digits, out_dir=tmp_path, on_epoch=lambda rec, ck: rec["epoch"] == 2)
    assert stopped.status == "stopped" and len(stopped.history) == 2
    resumed = train(config, data=digits, resume=tmp_path / "checkpoint")
    assert len(resumed.history) == 3
    ws, wr = _weights(straight.model), _weights(resumed.model)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)


def test_on_epoch_sees_every_epoch_and_its_checkpoint(digits, tmp_path):
    seen = []
    train(TrainConfig(**FAST), data=digits, out_dir=tmp_path, on_epoch=lambda rec, ck: seen.append((rec["epoch"], ck)))
    assert [e for e, _ in seen] == [1, 2]
    assert all(ck is not None and (ck / "model.safetensors").is_file() for _, ck in seen)


def test_train_command_prints_json_last(tmp_path, capsys):
    from pipeline.cli import main

    code = main(["train", "--dataset", "digits", "--epochs", "1", "--n-train", "200", "--width", "8",
                 "--lambda-focus", "0.1", "--coupling-k", "0.1", "--epsilon", "0.5", "--seed", "0",
                 "--out", str(tmp_path), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(out[-1])
    assert code == 0
    for key in ("test_acc", "focus_loss", "sync_loss", "status", "checkpoint"):
        assert key in payload
    assert payload["status"] == "ok" and math.isfinite(payload["test_acc"])
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()


def test_train_command_bad_value_exits_2_naming_the_field(capsys):
    from pipeline.cli import main

    assert main(["train", "--lambda-focus", "-1", "--quiet"]) == 2
    assert "lambda_focus" in capsys.readouterr().err
