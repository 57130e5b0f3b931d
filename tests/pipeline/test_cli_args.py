"""Bad command lines: exit code 2 and one line on stderr, never a usage dump or a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli

ROOT = Path(__file__).parents[2]
DIGITS = str(ROOT / "studies" / "digits.yaml")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse exits from parse_args
        rc = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    return int(rc), out, err


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["validate"], "syncstudy validate: error: the following arguments are required: spec"),
        (["validate", DIGITS, "--bogus"], "syncstudy: error: unrecognized arguments: --bogus"),
        (["validate", DIGITS, "--smoke=yes"], "ignored explicit argument"),
        (["validate", DIGITS, "extra.yaml"], "unrecognized arguments: extra.yaml"),
        ([], "syncstudy: error: the following arguments are required: COMMAND"),
        (["valiate", DIGITS], "invalid choice: 'valiate'"),
        (["validate", "/nonexistent/study.yaml"], "/nonexistent/study.yaml: file not found"),
        (["validate", str(ROOT / "studies"), "--smoke"], "studies: is a directory, not a spec file"),
        (["validate", str(ROOT / "README.md")], "README.md: "),
    ],
    ids=["missing-spec", "unknown-flag", "flag-with-value", "two-specs", "no-command", "typo-command",
         "nonexistent-file", "directory-smoke", "not-a-spec"],
)
def test_bad_arguments(argv: list[str], expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_main(argv, capsys)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert expect in err
    assert "Traceback" not in err and "usage:" not in err


def test_json_output_is_the_resolved_spec(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_main(["validate", DIGITS, "--json", "--smoke"], capsys)
    assert rc == 0
    doc = json.loads(out)
    assert doc["name"] == "digits" and doc["samples"] == 2 and doc["train"]["epochs"] == 1


def test_real_process_exit_codes(tmp_path: Path) -> None:
    """One subprocess: the installed entry point's exit codes and output, end to end."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsearch: {coupling_K: {low: 1.0, high: 0.1}}\nobjectives: [{metric: test_acc}]\n")
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert 'ray' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "validate", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"syncstudy validate: error: {bad}: search.coupling_K.low: must be < high (0.1), got 1.0: "
        "the range is empty or inverted\n"
    )
