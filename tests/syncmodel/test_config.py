"""TrainConfig: strict construction, one property per test."""

from __future__ import annotations

import pytest

from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError


def test_defaults_are_valid_and_round_trip():
    config = TrainConfig()
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"epochs": "5"}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"lr": 0}, "lr"),
        ({"lambda_focus": -0.1}, "lambda_focus"),
        ({"coupling_K": float("nan")}, "coupling_K"),
        ({"epsilon": 0}, "epsilon"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"layers": []}, "layers"),
        ({"layers": "block3"}, "layers"),
        ({"download": "yes"}, "download"),
    ],
)
def test_bad_field_names_the_field(raw, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(raw)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_prefix_is_prepended_to_the_field():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"epochs": 0}, prefix="train.")
    assert info.value.field == "train.epochs"


def test_ints_are_accepted_for_floats():
    assert TrainConfig.from_dict({"lambda_focus": 1}).lambda_focus == 1.0
    assert isinstance(TrainConfig.from_dict({"lambda_focus": 1}).lambda_focus, float)
