"""`syncstudy dashboard SPEC|--study NAME`: the MLflow UI on the study's tracking store.

Binds to 127.0.0.1 unless `--host` says otherwise. A study tracked on an MLflow server
already has its UI there: the URL is printed and nothing is started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.commands._study import add_study_arguments

    add_study_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")


def command(uri: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pipeline.commands._study import locate_study, open_study
    from pipeline.redact import redact

    ref = locate_study(args.spec, args.study, args.tracking_uri, smoke=args.smoke)
    open_study(ref)
    if ref.target.uri.startswith(("http://", "https://")):
        print(f"study {ref.name!r} is tracked on an MLflow server: open {redact(ref.target.uri)}")
        return 0
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host}: anyone who can reach it can read the study", file=sys.stderr)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    print(f"MLflow UI for study {ref.name!r} (experiment {ref.target.experiment!r}) at {url}  (Ctrl-C stops it)", flush=True)
    # Its own process group, stopped with us: a SIGTERM to this command (a test, a service
    # manager) must not leave the MLflow server and its workers running as orphans.
    proc = subprocess.Popen(command(ref.target.uri, args.host, args.port), start_new_session=True)

    def stop(*_: object) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    previous = signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(143)))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop()
        signal.signal(signal.SIGTERM, previous)
