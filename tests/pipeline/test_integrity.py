"""Exported folders and checkpoints under fault: `export --verify` and `evaluate` refuse a
truncated, altered or escaping file with exit 2 and one line naming it, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline import cli
from pipeline.export import MANIFEST, verify
from syncmodel.checkpoint import save_checkpoint, with_digest
from syncmodel.checkpoint_format import LEGACY_FORMAT
from syncmodel.config import TrainConfig
from syncmodel.errors import SyncStudyError
from syncmodel.files import file_sha256
from syncmodel.nets import build_model

META = {"in_channels": 1, "num_classes": 10, "image_size": 8, "layers": ["features.0"], "epoch": 1}


def _export_like(folder: Path, legacy: bool = False) -> Path:
    """A folder as `export_trial` writes one (model.safetensors, config.json, SHA256SUMS), or
    (`legacy`) as a release before safetensors wrote one (model.pt)."""
    folder.mkdir()
    config = TrainConfig(dataset="digits", width=8)
    torch.manual_seed(0)
    model = build_model(config, 1, 10, 8)
    if legacy:
        payload = {"format": LEGACY_FORMAT, "state_dict": model.state_dict(), "config": config.to_dict(), "meta": META}
        torch.save(with_digest(payload), folder / "model.pt")
    else:
        save_checkpoint(folder, model, config, META)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    _manifest(folder)
    return folder


def _manifest(folder: Path, extra: str = "") -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    (folder / MANIFEST).write_text("".join(f"{file_sha256(p)}  {p.name}\n" for p in files) + extra)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_verify_accepts_a_good_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _export_like(tmp_path / "best")
    assert verify(out) == 2
    code, text = _cli(capsys, "export", "--verify", str(out))
    assert code == 0 and "2 files match SHA256SUMS" in text


@pytest.mark.parametrize(
    "damage, words",
    [
        ("alter", "config.json: sha256 does not match"),
        ("truncate", "model.safetensors: sha256 does not match"),
        ("truncate+manifest", "model.safetensors: not a readable weights-only checkpoint"),
        ("flip+manifest", "model.safetensors: contents do not match the checkpoint's sha256"),
        ("missing", "config.json: listed in SHA256SUMS but missing"),
        ("extra", "files not in SHA256SUMS: evil.pkl"),
        ("no-manifest", "no SHA256SUMS"),
        ("bad-line", "not a 'SHA256  NAME' line"),
        ("parent", "entry '../outside' is not a file of the folder"),
        ("absolute", "entry '/etc/passwd' is not a file of the folder"),
        ("symlink", "entry 'link' leads outside the folder"),
    ],
)
def test_verify_refuses_with_one_line(
    damage: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _export_like(tmp_path / "best")
    (tmp_path / "outside").write_text("secret")
    if damage == "alter":
        (out / "config.json").write_text("{}")
    elif damage.startswith(("truncate", "flip")):
        data = (out / "model.safetensors").read_bytes()
        if damage.startswith("truncate"):
            data = data[: len(data) // 2]
        else:  # one bit of the last tensor's bytes: still a well-formed safetensors file
            data = data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:]
        (out / "model.safetensors").write_bytes(data)
        if damage.endswith("manifest"):
            _manifest(out)  # a consistent manifest over a broken file: the checkpoint's own digest refuses it
    elif damage == "missing":
        (out / "config.json").unlink()
    elif damage == "extra":
        (out / "evil.pkl").write_bytes(b"x")
    elif damage == "no-manifest":
        (out / MANIFEST).unlink()
    elif damage == "bad-line":
        _manifest(out, extra="not a manifest line\n")
    elif damage in ("parent", "absolute"):
        name = "../outside" if damage == "parent" else "/etc/passwd"
        target = tmp_path / "outside" if damage == "parent" else Path("/etc/passwd")
        _manifest(out, extra=f"{file_sha256(target)}  {name}\n")
    elif damage == "symlink":
        (out / "link").symlink_to(tmp_path / "outside")
        _manifest(out, extra=f"{file_sha256(tmp_path / 'outside')}  link\n")
    with pytest.raises(SyncStudyError, match="refused|match|missing|not|no "):
        verify(out)
    code, text = _cli(capsys, "export", "--verify", str(out))
    assert code == 2 and words in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_verify_still_checks_an_export_of_an_earlier_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder exported before safetensors (model.pt) verifies, with torch; an altered model.pt
    under a consistent manifest is refused by the checkpoint's own sha256."""
    out = _export_like(tmp_path / "old", legacy=True)
    code, text = _cli(capsys, "export", "--verify", str(out))
    assert code == 0 and "2 files match SHA256SUMS" in text, text
    (out / "model.pt").write_bytes(_flip_weight_byte(out / "model.pt", (out / "model.pt").read_bytes()))
    _manifest(out)
    code, text = _cli(capsys, "export", "--verify", str(out))
    assert code == 2 and f"{out / 'model.pt'}: contents do not match" in text and len(text.strip().splitlines()) == 1


def test_evaluate_refuses_a_broken_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _export_like(tmp_path / "best") / "model.safetensors"
    good = ckpt.read_bytes()
    altered = good[:-5] + bytes([good[-5] ^ 0x40]) + good[-4:]
    for name, data in (("truncated", good[: len(good) // 2]), ("altered", altered)):
        ckpt.write_bytes(data)
        code, text = _cli(capsys, "evaluate", str(ckpt), "--out", str(tmp_path / "ev"), "--no-pictures")
        assert code == 2, (name, text)
        assert str(ckpt) in text and ("sha256" in text or "not a readable" in text), text
        assert "Traceback" not in text and len(text.strip().splitlines()) == 1
    assert not (tmp_path / "ev").exists()  # nothing written for a refused checkpoint


def _flip_weight_byte(ckpt: Path, data: bytes) -> bytes:
    """A model.pt with one bit of its largest tensor flipped (torch still loads it)."""
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    big = max(state.values(), key=lambda t: t.numel())
    at = data.find(big.contiguous().numpy().tobytes()[:32])
    assert at > 0
    out = bytearray(data)
    out[at + 3] ^= 0x40
    return bytes(out)


def test_export_requires_out_and_study_names_cannot_escape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = _cli(capsys, "export", "--study", "digits")
    assert code == 2 and "--out DIR is required" in text
    for name in ("../../etc", "a/b", "/tmp/x"):
        code, text = _cli(capsys, "runs", "--study", name)
        assert code == 2 and "not a study name" in text, text


def test_export_refuses_an_artifact_that_lands_outside_its_download_folder(tmp_path: Path) -> None:
    """A store answering with a path outside the download folder (a crafted artifact name
    such as ../../x) is refused, and no export folder or temporary folder is left."""
    from pipeline.export import export_trial
    from pipeline.record.tracking import TrialRecord

    outside = tmp_path / "elsewhere" / "model.pt"
    outside.parent.mkdir()
    outside.write_bytes(b"x")

    class Store:
        study = "digits"

        def download(self, run_id: str, artifact: str, dst: Path) -> Path:
            return dst / ".." / ".." / outside.relative_to("/")  # escapes dst

    record = TrialRecord("t1", "r1", "ok", {}, {"test_acc": 0.5})
    with pytest.raises(SyncStudyError, match="refusing artifact .* would escape"):
        export_trial(Store(), record, tmp_path / "out", objectives=[], chosen_by="test")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]
