"""Bad input to `train`, `evaluate`, `validate` and `export` (issue 14, items 5, 7, 8, 12): one
line on stderr naming the field or file, exit code 2, no traceback, and nothing written before
stays lost or half replaced. No Ray: export's tracker is a stand-in serving files from a folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from pipeline import cli
from pipeline.export import MANIFEST, export_trial, verify
from syncmodel.checkpoint import save_checkpoint
from syncmodel.config import TrainConfig
from syncmodel.errors import SyncStudyError
from syncmodel.files import file_sha256
from syncmodel.nets import build_model

ROOT = Path(__file__).parents[2]
TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--n-train", "64", "--width", "4", "--device", "cpu", "--quiet"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse exits from parse_args
        rc = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    return int(rc), out, err


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], expect: str) -> str:
    rc, _, err = run_main(argv, capsys)
    assert rc == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert expect in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("flags", "expect"),
    [(["--seed", "-1"], "seed: must be >= 0, got -1"),
     (["--seed", "4294967296"], "seed: must be < 4294967296, got 4294967296"),
     (["--device", "tpu"], "device: must be auto, cpu, mps, cuda or cuda:N, got 'tpu'")],
    ids=["seed-negative", "seed-2**32", "device-tpu"],
)  # fmt: skip
def test_train_refuses_bad_run_settings(
    flags: list[str], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_line_error([*TRAIN, *flags, "--out", str(tmp_path / "run")], capsys, expect)
    assert not (tmp_path / "run").exists() and list(tmp_path.iterdir()) == []


def test_train_with_val_fraction_zero_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_main([*TRAIN, "--val-fraction", "0", "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["status"] == "ok" and result["val_acc"] is None and result["test_acc"] is not None


def test_train_on_a_one_class_image_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    (tmp_path / "cat").mkdir()
    for i in range(20):
        Image.new("RGB", (6, 6), (i, 0, 0)).save(tmp_path / "cat" / f"{i}.png")
    argv = [*TRAIN, "--dataset", "imagefolder", "--data-root", str(tmp_path)]
    one_line_error(argv, capsys, f"imagefolder: {tmp_path} has 1 class folder (cat)")


def test_validate_refuses_a_seed_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((ROOT / "studies" / "digits.yaml").read_text())
    doc.setdefault("train", {})["seed"] = -1
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    one_line_error(["validate", str(spec)], capsys, "train.seed: must be >= 0, got -1")


def test_validate_accepts_val_fraction_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # with objectives not read on the validation split (validate refuses val_acc there)
    doc = yaml.safe_load((ROOT / "studies" / "digits.yaml").read_text())
    doc.setdefault("train", {})["val_fraction"] = 0
    doc["objectives"] = [{"metric": "test_acc", "mode": "max"}, {"metric": "interpretability", "mode": "max"}]
    doc["evaluation"]["split"] = "test"  # no validation split to evaluate (evaluation_split_val_without_val.yaml)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    rc, _, err = run_main(["validate", str(spec)], capsys)
    assert rc == 0, err
    assert err.startswith("warning: evaluation.split: test: the objective interpretability will be selected on test images")


# --- train --out -------------------------------------------------------------------------------


def test_train_out_over_an_earlier_run_is_refused_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run_main([*TRAIN, "--out", str(out)], capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    one_line_error([*TRAIN, "--seed", "3", "--out", str(out)], capsys, "not empty (an earlier run?); pass --force")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_train_force_that_fails_keeps_the_earlier_run_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run_main([*TRAIN, "--out", str(out)], capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad_root = tmp_path / "nothing"
    argv = [*TRAIN, "--dataset", "imagefolder", "--data-root", str(bad_root), "--force", "--out", str(out)]
    one_line_error(argv, capsys, "imagefolder: no folder")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary folder left


def test_train_force_replaces_the_whole_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_main([*TRAIN, "--out", str(out)], capsys)[0] == 0
    (out / "stale.txt").write_text("from the earlier run")
    assert run_main([*TRAIN, "--seed", "3", "--force", "--out", str(out)], capsys)[0] == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["seed"] == 3 and result["checkpoint"] == str(out / "checkpoint" / "model.safetensors")
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("where", ["file", "proc"])
def test_train_out_that_cannot_be_a_folder(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "run" if where == "file" else Path("/proc/no-such-dir/run")
    one_line_error([*TRAIN, "--out", str(out)], capsys, f"--out {out}: ")
    assert (tmp_path / "afile").read_text() == "x"


# --- evaluate -------------------------------------------------------------------------------------


def _checkpoint(path: Path, **meta: object) -> Path:
    config = TrainConfig(dataset="digits", width=4)
    base = {"in_channels": 1, "num_classes": 10, "image_size": 8, "layers": ["features.0"], "epoch": 1}
    return save_checkpoint(path, build_model(config, 1, 10, 8), config, {**base, **meta})


def test_evaluate_checkpoint_with_a_string_in_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(tmp_path / "model.safetensors", in_channels="1")
    err = one_line_error(["evaluate", str(ckpt), "--out", str(tmp_path / "ev")], capsys, f"{ckpt}: checkpoint meta 'in_channels' must be int")
    assert "'1'" in err and not (tmp_path / "ev").exists()


@pytest.mark.parametrize(("flags", "expect"), [(["--device", "tpu"], "--device: must be auto"), (["--out", "FILE/ev"], "is not a folder")])
def test_evaluate_bad_device_or_out(flags: list[str], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(tmp_path / "model.safetensors")
    (tmp_path / "FILE").write_text("x")
    flags = [f.replace("FILE", str(tmp_path / "FILE")) for f in flags]
    argv = ["evaluate", str(ckpt), "--out", str(tmp_path / "ev"), "--no-pictures", "--max-images", "20", *flags]
    one_line_error(argv, capsys, expect)


# --- export -----------------------------------------------------------------------------------------


class _Store:
    """Stand-in for the tracker: `download` copies an artifact from a folder, as MLflow does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.study = "bad-input"

    def download(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        src = self.folder / artifact_path
        if not src.is_file():
            raise OSError(f"No such file or directory: {artifact_path}")
        target = Path(dst) / artifact_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        return target

    def has_artifact(self, run_id: str, artifact_path: str) -> bool:
        return (self.folder / artifact_path).is_file()


RECORD = SimpleNamespace(trial_id="t0001", run_id="r1", status="ok", metrics={"test_acc": 0.5})


@pytest.fixture
def store(tmp_path: Path) -> _Store:
    folder = tmp_path / "store"
    _checkpoint(folder / "checkpoint" / "model.safetensors")
    (folder / "config").mkdir()
    (folder / "config" / "config.yaml").write_text("dataset: digits\n")
    (folder / "config" / "config.json").write_text('{"dataset": "digits"}\n')
    return _Store(folder)


def _export(store: _Store, out: Path) -> Path:
    return export_trial(store, RECORD, out, objectives=[("test_acc", "max")], chosen_by="test")  # type: ignore[arg-type]


def test_export_of_a_trial_without_a_checkpoint(store: _Store, tmp_path: Path) -> None:
    (store.folder / "checkpoint" / "model.safetensors").unlink()  # and no legacy model.pt either
    with pytest.raises(SyncStudyError, match="^trial t0001 \\(status ok\\): its MLflow run r1 has no checkpoint/model.safetensors"):
        _export(store, tmp_path / "out")
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_export_of_a_trial_of_an_earlier_release_converts_its_model_pt(store: _Store, tmp_path: Path) -> None:
    """A run that holds a model.pt (written before safetensors) exports as a model.safetensors
    holding the same weights, config and meta; the folder verifies."""
    from syncmodel.checkpoint import load_checkpoint, read_checkpoint, with_digest
    from syncmodel.checkpoint_format import LEGACY_FORMAT

    new = store.folder / "checkpoint" / "model.safetensors"
    want = read_checkpoint(new)
    new.unlink()
    legacy = {"format": LEGACY_FORMAT, "state_dict": want["state_dict"], "config": want["config"], "meta": want["meta"]}
    torch.save(with_digest(legacy), store.folder / "checkpoint" / "model.pt")
    out = _export(store, tmp_path / "out")
    assert (out / "model.safetensors").is_file() and not (out / "model.pt").exists()
    assert verify(out) == 5  # README.md, config.json, config.yaml, metrics.json, the checkpoint
    got = read_checkpoint(out / "model.safetensors")
    assert got["config"] == want["config"] and got["meta"] == want["meta"]
    assert all(torch.equal(got["state_dict"][k], v) for k, v in want["state_dict"].items())
    assert got["state_dict"].keys() == want["state_dict"].keys()
    load_checkpoint(out)  # rebuilds the model


@pytest.mark.parametrize("where", ["file", "proc"])
def test_export_out_that_cannot_be_a_folder(where: str, store: _Store, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "out" if where == "file" else Path("/proc/exported")
    with pytest.raises(SyncStudyError, match=f"^--out {out}: "):
        _export(store, out)


def test_exported_folder_and_files_follow_the_umask(store: _Store, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = _export(store, tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}
    verify(out)


def _manifest_with(out: Path, extra_line: str) -> None:
    with open(out / MANIFEST, "a") as fh:
        fh.write(extra_line)


def test_verify_refuses_a_300_character_name(store: _Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _export(store, tmp_path / "out")
    _manifest_with(out, f"{file_sha256(out / 'model.safetensors')}  {'a' * 300}\n")
    one_line_error(["export", "--verify", str(out)], capsys, "is too long for a file name (refused)")


def test_verify_refuses_the_checkpoint_listed_twice(store: _Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _export(store, tmp_path / "out")
    _manifest_with(out, f"{'0' * 64}  model.safetensors\n")  # `sha256sum -c` fails this line
    one_line_error(["export", "--verify", str(out)], capsys, "'model.safetensors' is listed twice")
