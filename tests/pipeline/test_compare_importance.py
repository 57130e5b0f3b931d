"""Parameter importances (fANOVA through Optuna) from trials rows, on an in-memory study."""

from __future__ import annotations

import numpy as np

from pipeline.importance import param_importances
from pipeline.record.tables import TrialRow
from pipeline.spec.types import Objective, Param, StudySpec
from syncmodel.config import TrainConfig


def _spec() -> StudySpec:
    return StudySpec(
        name="imp", train=TrainConfig(),
        search={
            "lr": Param("lr", "float", 1e-4, 1e-1, log=True),
            "weight_decay": Param("weight_decay", "float", 0.0, 1e-3),
            "focus_kind": Param("focus_kind", "categorical", choices=("spread", "gate")),
        },
        objectives=[Objective("val_acc", "max")],
    )  # fmt: skip


def _rows(n: int = 40) -> list[TrialRow]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        params = {"lr": lr, "weight_decay": float(rng.uniform(0, 1e-3)), "focus_kind": ["spread", "gate"][i % 2]}
        # val_acc is a function of lr alone: the other two explain none of its variance
        rows.append(TrialRow(f"t{i}", "ok", params, {"val_acc": float(np.log10(lr))}))
    return rows


def test_the_param_that_determines_the_objective_takes_it_all() -> None:
    found = param_importances(_spec(), _rows(), "val_acc", "max")
    assert set(found) == {"lr", "weight_decay", "focus_kind"}
    assert list(found)[0] == "lr"  # largest first
    # The forest tries a random subset of the params at each split (Optuna's fANOVA), so a
    # param that explains nothing still gets the small share of the splits made without lr
    # among the candidates: no exact zero to assert. What must hold: lr's share is more than
    # all the others' together, and the shares are normalised to 1.
    assert found["lr"] > found["weight_decay"] + found["focus_kind"]
    assert abs(sum(found.values()) - 1.0) <= 1e-9


def test_the_ranking_follows_the_param_that_determines_the_objective() -> None:
    """The control: the same trials with val_acc a function of weight_decay alone."""
    rows = [TrialRow(r.trial_id, "ok", r.params, {"val_acc": r.params["weight_decay"]}) for r in _rows()]
    found = param_importances(_spec(), rows, "val_acc", "max")
    assert list(found)[0] == "weight_decay"
    assert found["weight_decay"] > found["lr"] + found["focus_kind"]


def test_unfinished_and_outside_trials_are_left_out() -> None:
    rows = _rows(3)
    rows[0].status = "error"
    rows[1].params["lr"] = 5.0  # outside the searched range (another space): not this study's
    assert param_importances(_spec(), rows, "val_acc", "max") == {}  # one trial left
    flat = [TrialRow(f"t{i}", "ok", r.params, {"val_acc": 0.5}) for i, r in enumerate(_rows(6))]
    assert param_importances(_spec(), flat, "val_acc", "max") == {}  # nothing varies
