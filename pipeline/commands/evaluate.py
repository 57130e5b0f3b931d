"""`syncstudy evaluate` (not yet implemented)."""

from __future__ import annotations

import argparse

from syncmodel.errors import SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise SyncStudyError("'evaluate' is not implemented yet")
