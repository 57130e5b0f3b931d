"""`${VAR}` references in a tracking URI: kept as written everywhere the URI is stored, expanded
from the environment only at the moment a connection is made.

A spec's `postgresql://study:${MLFLOW_DB_PASSWORD}@db/mlflow` names a secret without holding
it. What Ray Tune pickles (its `tuner.pkl`, the trials' context), what MLflow records, the
study folder and the logs see that form only; the process that connects (the driver, or a
trial uploading to a server) expands it from its own environment, then and there
(`expand`). A process whose environment lacks the variable gets one line naming it.
"""

from __future__ import annotations

import os
import re
import socket

from syncmodel.errors import SyncStudyError

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingVariable(SyncStudyError):
    """A `${VAR}` of the tracking URI is not set in the process that needs it."""


def has_refs(text: str | None) -> bool:
    return bool(text) and ENV_REF.search(text) is not None


def expand(text: str) -> str:
    """`text` with each `${VAR}` replaced by the variable's value in this process's
    environment; `MissingVariable` (naming the variable, never a value) when one is unset."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        value = os.environ.get(name)
        if value is None:
            raise MissingVariable(
                f"the tracking URI needs the environment variable {name}, which is not set in this "
                f"process (pid {os.getpid()} on {socket.gethostname()}); on a cluster, set it on "
                "every node that records (docs/cluster.md, 'Secrets')"
            )
        return value

    return ENV_REF.sub(sub, text)
