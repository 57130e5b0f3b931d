"""`syncstudy launch SPEC`: run a study (local Ray started here, or `--address` of a cluster).

A progress line per ended trial, a summary table at the end. Exit 0 when at least one trial
finished (status ok), 1 when none did, 2 on a user error (nothing started), 130 when it was
interrupted (Ctrl-C: Tune saves the study; `--resume` continues it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from syncmodel.errors import SyncStudyError

# Other libraries' loggers: to the study folder's log file, on the terminal only with --verbose.
LIBRARIES = ("ray", "mlflow", "optuna", "alembic", "urllib3", "filelock")
LOG_FILE = "launch.log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="study spec YAML (studies/*.yaml)")
    parser.add_argument("--smoke", action="store_true", help="the spec's smoke form (CI-sized)")
    parser.add_argument("--resume", action="store_true", help="continue the study whose driver died")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster to join: HOST:PORT or auto (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (overrides the spec)")
    parser.add_argument("--storage", metavar="DIR", help="study folder (overrides the spec; default runs/NAME)")
    parser.add_argument(
        "--name", metavar="NEW",
        help="the study's name (overrides the spec's): a distinct study where another of the spec's name already records into the tracking store",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    parser.add_argument(
        "--verbose", action="store_true",
        help=f"other libraries' log lines (Ray, MLflow, Optuna) on the terminal too (always in STORAGE/{LOG_FILE})",
    )  # fmt: skip


class _FolderFileHandler(logging.FileHandler):
    """A log file whose folder is made on the first record: a launch refused before it starts
    leaves nothing behind. Opened without following a link (pipeline.safe_files): a shared
    study folder's `launch.log -> ../victim` must not make the driver append to `victim`."""

    def _open(self):  # noqa: ANN202 - logging.FileHandler's
        from pipeline.safe_files import open_file

        path = Path(self.baseFilename)
        fd = open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, within=path.parent)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        # The open happens inside emit, outside logging's own error handling: a link planted
        # after launch's check would raise into whatever library logged. Said once; the
        # libraries' lines are then dropped (the study's own output is on the terminal).
        if getattr(self, "refused", False):
            return
        try:
            super().emit(record)
        except SyncStudyError as exc:
            self.refused = True
            print(f"syncstudy: not logging to {self.baseFilename}: {exc}", file=sys.stderr, flush=True)


def route_library_logs(log_path: Path, verbose: bool) -> list[logging.Handler]:
    """Send Ray's, MLflow's and Optuna's log records to `log_path` (and stderr if `verbose`)
    instead of the terminal, where they fell between syncstudy's own lines (Ray's token
    warning, MLflow's "Creating initial MLflow database tables", Optuna's "A new study
    created in memory"). Ray and Optuna are imported here: they attach their console
    handlers on import (Ray) or first use (Optuna), which are replaced; MLflow is told not
    to attach one (MLFLOW_CONFIGURE_LOGGING) before it is imported."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    import optuna.logging
    import ray  # noqa: F401 - attaches its handlers

    optuna.logging.disable_default_handler()
    handlers: list[logging.Handler] = [_FolderFileHandler(log_path, delay=True)]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.syncstudy = True  # type: ignore[attr-defined]
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            # console handlers, and ours from an earlier launch in this process (tests)
            if getattr(old, "syncstudy", False) or (
                isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler)
            ):
                logger.removeHandler(old)
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    return handlers


def run(args: argparse.Namespace) -> int:
    from pipeline.spec.arms import is_comparison

    if is_comparison(args.spec):  # an `arms:` spec: every arm x repeat study (pipeline.comparison)
        from pipeline.commands.compare import launch_comparison

        return launch_comparison(args)
    from pipeline.redact import redact
    from pipeline.spec import load_spec
    from pipeline.study import print_summary, run_study

    spec = load_spec(
        args.spec,
        smoke=args.smoke,
        overrides={"storage": args.storage, "tracking.uri": args.tracking_uri, "name": args.name},
    )
    if spec.tracking.note:
        print(f"warning: {spec.tracking.note}", file=sys.stderr, flush=True)
    from pipeline.paths import storage_of
    from pipeline.safe_files import refuse_link

    # The log is opened at its first record, perhaps mid-study; a planted link is refused
    # now, in one line, before anything is written (the handler would not follow it either).
    refuse_link(storage_of(spec) / LOG_FILE)
    route_library_logs(storage_of(spec) / LOG_FILE, args.verbose)
    verb = "resuming" if args.resume else "launching"
    print(
        f"{verb} study {spec.name!r}{' (smoke form)' if spec.smoke else ''}: {spec.samples} trials, "
        f"{spec.concurrency} at a time, sampler {spec.sampler.name}, scheduler {spec.scheduler.name}",
        flush=True,
    )
    outcome = run_study(spec, resume=args.resume, address=args.address, quiet=args.quiet)
    outcome.target = type(outcome.target)(
        redact(outcome.target.uri) or "", outcome.target.experiment, outcome.target.artifact_location
    )
    print_summary(spec, outcome)
    if outcome.unfinished:
        return 130
    return 0 if outcome.ok > 0 else 1
