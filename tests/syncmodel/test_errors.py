"""User errors cross process boundaries (Ray) intact."""

from __future__ import annotations

import pickle

from syncmodel.errors import ConfigError


def test_config_error_pickles_with_its_field_and_message():
    again = pickle.loads(pickle.dumps(ConfigError("search.coupling_K.low", "must be > 0")))
    assert (again.field, again.message, str(again)) == (
        "search.coupling_K.low", "must be > 0", "search.coupling_K.low: must be > 0")
