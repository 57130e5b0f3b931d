"""`syncstudy` command line: builds the sub-command parsers and maps errors to exit codes.

Exit codes: 0 success, 1 the job ran but failed (e.g. every trial errored), 2 user error
(bad spec, bad argument, missing file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
import threading

from syncmodel.errors import SyncStudyError

# sub-command -> (module, one-line help). Modules are imported only when used, so that
# `syncstudy train` never pays for Ray, MLflow or Optuna.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pipeline.commands.train", "train one config, no Ray (progress bar per epoch)"),
    "evaluate": ("pipeline.commands.evaluate", "interpretability report for a checkpoint"),
    "validate": ("pipeline.commands.validate", "check a study spec without starting anything"),
    "launch": ("pipeline.commands.launch", "run a study (local Ray, or --address for a cluster)"),
    "runs": ("pipeline.commands.runs", "table of a study's trials (its tables when finished, else MLflow)"),
    "pareto": ("pipeline.commands.pareto", "Pareto front over a study's objectives"),
    "compare": ("pipeline.commands.compare", "a comparison's answer: fronts, hypervolumes, paired differences"),
    "export": ("pipeline.commands.export", "best or named trial -> portable checkpoint folder"),
    "dashboard": ("pipeline.commands.dashboard", "start the MLflow UI on a study's store"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (no usage dump) on a bad argument."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="syncstudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen sub-command's module (its arguments), not all of them.
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except SyncStudyError as exc:
        from pipeline.record.tracking import redact  # a URI's password never reaches the terminal

        print(f"syncstudy {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"syncstudy {args.command}: interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The `syncstudy` executable: `main()`, then a quick exit.

    With torch, Ray and MLflow loaded, the interpreter's own teardown after the work is done
    (freeing every module's objects, native destructors) took 2–3 s on a 2-core machine. The
    exit handlers still run (atexit: temporary folders, logging, MLflow) and the streams are
    flushed; only that teardown is skipped. While a non-daemon thread still runs, the exit is
    the normal one (Python joins it first).
    """
    code = main()
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
