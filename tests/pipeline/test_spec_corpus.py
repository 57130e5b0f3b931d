"""Malformed study specs: each → exit 2, one line naming the file and the field, no Ray.

Every file in bad_specs/ starts with `# expect: TEXT`; the error line must read
`syncstudy validate: error: <file>: TEXT...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import cli

HERE = Path(__file__).parent
CORPUS = sorted((HERE / "bad_specs").glob("*.yaml"))
ROOT = HERE.parents[1]


def _expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first[len("# expect: ") :].strip()


def _validate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse errors exit from parse_args
        rc = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    return int(rc), out, err


HEAVY = ("ray", "optuna", "mlflow")


@pytest.fixture(autouse=True)
def _no_heavy_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Validating imports none of these (other tests of the session may have imported them
    # already; the fresh-process test below checks from a clean interpreter).
    monkeypatch.delenv("SYNCSTUDY_TEST_UNSET_VARIABLE", raising=False)
    before = {name for name in HEAVY if name in sys.modules}
    yield
    assert {name for name in HEAVY if name in sys.modules} == before


def test_corpus_is_large() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_spec_exits_2_naming_the_field(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rel = os.path.relpath(path)
    rc, out, err = _validate(["validate", rel], capsys)
    assert rc == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith(f"syncstudy validate: error: {rel}: {_expected(path)}"), err


@pytest.mark.parametrize("path", CORPUS[:10], ids=[p.stem for p in CORPUS[:10]])
def test_bad_spec_fails_with_smoke_too(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _validate(["validate", str(path), "--smoke"], capsys)
    assert rc == 2 and err.count("\n") == 1


def test_whole_corpus_in_a_fresh_process_starts_no_ray() -> None:
    """The real check for 'nothing started': a clean interpreter, never importing Ray."""
    script = (
        "import io, json, sys, contextlib\n"
        "from pipeline.cli import main\n"
        "codes = []\n"
        "for path in sys.argv[1:]:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        codes.append((main(['validate', path]), err.getvalue().count(chr(10))))\n"
        "print(json.dumps({'codes': codes, 'ray': 'ray' in sys.modules,\n"
        "                  'optuna': 'optuna' in sys.modules, 'mlflow': 'mlflow' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SYNCSTUDY_TEST_UNSET_VARIABLE"}
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, CORPUS)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [[2, 1]] * len(CORPUS)
    assert not (result["ray"] or result["optuna"] or result["mlflow"])


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    rc, _, err = _validate(["validate", str(missing)], capsys)
    assert rc == 2 and err == f"syncstudy validate: error: {missing}: file not found\n"


def test_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = _validate(["validate", str(tmp_path), "--smoke"], capsys)
    assert rc == 2 and err == f"syncstudy validate: error: {tmp_path}: is a directory, not a spec file\n"


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "locked.yaml"
    spec.write_text("name: x\n")
    spec.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the read fail as it would for a user
        def denied(self: Path, *args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "open", denied)
    rc, _, err = _validate(["validate", str(spec)], capsys)
    assert rc == 2
    assert err == f"syncstudy validate: error: {spec}: cannot read the file: permission denied\n"


def test_oversized_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text("# " + "x" * (1 << 20) + "\n")
    rc, _, err = _validate(["validate", str(spec)], capsys)
    assert rc == 2 and "larger than" in err and err.count("\n") == 1
