"""Learning-rate schedule: values at known steps, torch's OneCycleLR, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.errors import CheckpointError, ConfigError
from syncmodel.training import scheduled_lr, train

FAST = dict(dataset="digits", n_train=300, epochs=3, width=8, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_data(TrainConfig(**FAST))


def _cosine(**kw) -> TrainConfig:
    return TrainConfig(lr=0.01, lr_schedule="cosine", lr_warmup_fraction=0.1, **kw)


def test_cosine_first_step_is_the_start_of_the_linear_warmup():
    # 100 steps, 10 of warm-up: step 0 runs at lr / 10
    assert scheduled_lr(_cosine(), 0, 100) == pytest.approx(0.001)


def test_cosine_reaches_the_peak_at_the_end_of_the_warmup():
    assert scheduled_lr(_cosine(), 9, 100) == pytest.approx(0.01)
    assert scheduled_lr(_cosine(), 10, 100) == pytest.approx(0.01)  # cos(0): still the peak


def test_cosine_middle_of_the_annealing_is_half_the_peak():
    # annealing over steps 10..99 (90 steps): step 55 is half-way, cos(pi / 2) = 0
    assert scheduled_lr(_cosine(), 55, 100) == pytest.approx(0.005)


def test_cosine_last_step_is_nearly_zero():
    expected = 0.01 * (1 + math.cos(math.pi * 89 / 90)) / 2  # 3.0e-5
    assert scheduled_lr(_cosine(), 99, 100) == pytest.approx(expected)
    assert scheduled_lr(_cosine(), 99, 100) < 0.01 * 0.01


def test_constant_schedule_keeps_the_lr():
    cfg = TrainConfig(lr=0.01, lr_schedule="constant")
    assert {scheduled_lr(cfg, s, 50) for s in range(50)} == {0.01}


def test_onecycle_follows_torch_onecyclelr():
    total = 40
    cfg = TrainConfig(lr=0.01, lr_schedule="onecycle")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=total, cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [scheduled_lr(cfg, s, total) for s in range(total)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_training_steps_the_schedule_per_optimisation_step(digits):
    # 270 train images in batches of 64: 5 steps an epoch; the epoch's record holds its last step's lr
    result = train(TrainConfig(**FAST, lr_schedule="cosine"), data=digits)
    total = 3 * 5
    assert [r["lr"] for r in result.history] == [scheduled_lr(result.config, 5 * e - 1, total) for e in (1, 2, 3)]


def test_resume_in_the_middle_of_the_schedule_continues_it_exactly(digits, tmp_path):
    config = TrainConfig(**FAST, lr_schedule="cosine", lr_warmup_fraction=0.2)
    straight = train(config, data=digits)
    stopped = train(config, data=digits, out_dir=tmp_path, on_epoch=lambda rec, ck: rec["epoch"] == 1)
    assert stopped.status == "stopped"
    resumed = train(config, data=digits, resume=tmp_path / "checkpoint")
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in straight.history]
    ws, wr = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ws[k], wr[k]) for k in ws)


def test_resume_under_another_schedule_is_refused(digits, tmp_path):
    config = TrainConfig(**FAST, lr_schedule="constant")
    train(config, data=digits, out_dir=tmp_path, on_epoch=lambda rec, ck: True)
    with pytest.raises(CheckpointError, match="schedule"):
        train(config.replace(lr_schedule="cosine"), data=digits, resume=tmp_path / "checkpoint")


@pytest.mark.parametrize(
    "field,value", [("lr_schedule", "linear"), ("lr_warmup_fraction", 1.0), ("lr_warmup_fraction", -0.1)]
)
def test_bad_schedule_settings_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({field: value})
    assert err.value.field == field
