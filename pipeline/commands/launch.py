"""`syncstudy launch` (not yet implemented)."""

from __future__ import annotations

import argparse

from syncmodel.errors import SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise SyncStudyError("'launch' is not implemented yet")
