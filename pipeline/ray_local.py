"""The private local Ray a study starts on this machine, and its start-up tricks: a token of
its own, trial modules preloaded in the workers Ray prestarts, Tune's per-actor environment
moved into the local Ray's environment. Connecting to a cluster (`--address`) goes through
`ray_session` too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# What a trial's worker process imports before its first trial (a local Ray only): Ray
# starts its workers while the driver prepares the study, so the first trial does not wait
# seconds for torch. Evaluation adds its own modules (preload_modules).
TRIAL_MODULES = ("ray.tune", "syncmodel.training", "syncmodel.data.registry", "pipeline.trial")


def preload_modules(evaluate: bool = False) -> tuple[str, ...]:
    return TRIAL_MODULES + (("syncmodel.evaluation",) if evaluate else ())


@contextlib.contextmanager
def ray_session(
    address: str | None, num_cpus: int | None = None, preload: tuple[str, ...] = ()
) -> Iterator[bool]:
    """Connect to a cluster (`address`), reuse a Ray already started in this process, or start
    a local one (token authentication on, Ray's default for local clusters) and stop it after.
    Yields whether it started a local Ray.

    `preload`: modules the local Ray's worker processes import as they start (Ray's
    `preload_python_modules`); a cluster's workers are started by the cluster, not here.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # address="local": a new cluster, never one that `ray start` left on this machine
        # (plain ray.init() would join that one).
        private_token()
        for key, value in TUNE_ACTOR_ENV.items():
            os.environ.setdefault(key, value)
        system = {"preload_python_modules": list(preload)} if preload else None
        ray.init(address="local", num_cpus=num_cpus, _system_config=system, **kwargs)
    try:
        yield not address
    finally:
        ray.shutdown()


# Tune's environment for every trainable actor (ray.tune.execution.class_cache.DEFAULT_ENV_VARS
# in Ray 2.60): set in the local Ray's environment instead (see _actors_in_prestarted_workers).
TUNE_ACTOR_ENV = {"PL_DISABLE_FORK": "1"}


def actors_in_prestarted_workers() -> None:
    """Let the local Ray's trial actors start in the workers Ray prestarted (and preloaded).

    Tune gives every trainable actor `runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}}`
    (for PyTorch Lightning). A runtime env unlike the prestarted workers' (none) makes Ray
    start a fresh worker process for the first trial: 3 s of Python, Ray and torch imports
    on this project's 2-core machine. `ray_session` sets those variables in this process's
    environment before Ray starts, so that every process of the local Ray inherits them;
    here Tune's per-actor copy is dropped (for the rest of this process), but only if it
    holds nothing else (a Ray whose Tune adds other variables keeps them, and its first
    trial just starts slower: tests/pipeline/test_startup.py notices). Only for the local
    Ray `ray_session` started: a cluster's workers (`--address`) do not inherit this
    environment.

    Called from the main thread once the preparing thread is done: two threads importing
    ray.tune at once can fail (its circular imports with ray.train).
    """
    from ray.tune.execution import class_cache

    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict) and all(os.environ.get(k) == v for k, v in defaults.items()):
        defaults.clear()


def private_token() -> None:
    """A token of this process's own for the local Ray it starts (token auth stays on).

    Ray's default token file (~/.ray/auth_token) is shared by everything run under the same
    home folder; RAY_AUTH_TOKEN outranks it and is inherited by the cluster's processes only.
    A token the user set (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) is kept. RAY_AUTH_MODE is
    left to ray.init, which turns token mode on for a new local cluster and refreshes this
    process's Ray config; setting it here would leave that config stale (Ray imported).
    """
    import secrets

    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
