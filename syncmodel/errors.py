"""The one exception base for user errors (bad config, missing data, bad checkpoint).

The CLI catches `SyncStudyError` once and turns it into exit code 2 with its message.
"""

from __future__ import annotations


class SyncStudyError(Exception):
    """A user error: the message names the field, file or value at fault."""


class ConfigError(SyncStudyError):
    """A config or spec field is missing, unknown, of the wrong type or out of range."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):  # picklable across Ray processes despite the two-argument __init__
        return (self.__class__, (self.field, self.message))


class DataError(SyncStudyError):
    """A data set cannot be found or read; the message names the folder and what to put there."""


class CheckpointError(SyncStudyError):
    """A checkpoint is missing, truncated, altered or not a weights-only state dict."""
