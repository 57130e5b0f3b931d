"""evaluation.split: a trial's evaluation measures the validation split (its metrics may be
objectives; the test split only reports), `test` on request; the split is recorded (report.json,
final.json, the run's tag) and a study launched before the key resumes only as it ran (test).

The trial runs in-process through `pipeline.trial.trainable`, Tune's and Ray's calls replaced by
recorders (no Ray started), its data set swapped through the trial hook seam (pipeline.hooks)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_tracker import FakeTracker

from pipeline import cli, paths, study
from pipeline.hooks import Hooks, TrialHooks
from pipeline.spec import load_spec
from pipeline.spec.load import dump_resolved
from pipeline.spec.metrics import EVAL_SPLIT, EVAL_SPLIT_TAG
from pipeline.spec.types import EvaluationSpec
from pipeline.trial_files import TrialFiles
from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, Split

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "studies" / "digits.yaml"
CONFIG = TrainConfig(dataset="digits", n_train=120, epochs=1, width=8, device="cpu")
MAX_IMAGES = 100  # below digits' 144 validation images: the cap shows in the count


def _first(split: Split, n: int) -> Split:
    return Split(split.images[:n], split.labels[:n])


class _Swap(Hooks):
    """Hooks whose trials train and evaluate on `bundle` (the seam's `data`)."""

    def __init__(self, bundle: DataBundle):
        self.bundle = bundle

    def trial(self, trial_name: str, trial_id: str, resume: Path | None) -> TrialHooks:
        bundle = self.bundle

        class Seam(TrialHooks):
            def data(self, _: Any) -> Any:
                return bundle

        return Seam()


def _trial(
    bundle: DataBundle, split: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One trial of CONFIG on `bundle`, evaluated on `split`: (report.json, final.json) as the
    trial wrote them into its final checkpoint."""
    import ray
    from ray import tune

    from pipeline import trial

    seen: dict[str, Any] = {}

    def report(result: dict[str, Any], checkpoint: Any = None) -> None:
        if result.get("final") == 1:  # the folder is the trial's temporary one: read it now
            files = TrialFiles(Path(checkpoint.path))
            seen["report"] = json.loads(files.report.read_text())
            seen["final"] = json.loads(files.final.read_text())

    class Context:
        def get_trial_name(self) -> str:
            return "t"

        def get_trial_id(self) -> str:
            return "t"

        def get_node_id(self) -> str:
            return "node"

    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "get_context", Context)
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(ray, "get_runtime_context", Context)
    monkeypatch.setattr(trial, "hooks", lambda: _Swap(bundle))
    ctx = trial.TrialContext(
        base=CONFIG, search={}, threads=1,
        evaluation=EvaluationSpec(max_images=MAX_IMAGES, pictures=False, split=split),
    )  # fmt: skip
    trial.trainable({}, ctx=ctx)
    return seen["report"], seen["final"]


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    from syncmodel.data import load_data

    return load_data(CONFIG)


def _measured(report: dict[str, Any]) -> dict[str, Any]:
    """The report's values that depend on the images (its wall time does not count)."""
    return {k: v for k, v in report.items() if k != "eval_seconds"}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        (
            isinstance(a[k], float)
            and math.isnan(a[k])
            and isinstance(b[k], float)
            and math.isnan(b[k])
        )
        or a[k] == b[k]
        for k in a
    )


def test_a_trial_evaluates_the_validation_split(
    digits: DataBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(digits.val) > MAX_IMAGES and len(digits.test) > MAX_IMAGES
    report, final = _trial(digits, "val", monkeypatch)
    assert report["split"] == "val" and final[EVAL_SPLIT] == "val"
    assert report["images"] == final["images"] == min(len(digits.val), MAX_IMAGES)

    # another test split: the same evaluation (the test split only reports: test_acc moves)
    other_test = dataclasses.replace(digits, test=_first(digits.test, 30))
    report_t, final_t = _trial(other_test, "val", monkeypatch)
    assert _same(_measured(report_t), _measured(report))
    assert final_t["test_acc"] != final["test_acc"]

    # another validation split: another evaluation, counted on it
    other_val = dataclasses.replace(digits, val=_first(digits.val, 40))
    report_v, final_v = _trial(other_val, "val", monkeypatch)
    assert report_v["images"] == final_v["images"] == 40
    assert not _same(_measured(report_v), _measured(report))
    assert final_v["test_acc"] == final["test_acc"]  # the same model: val does not train it


def test_split_test_evaluates_the_test_split(
    digits: DataBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = dataclasses.replace(digits, test=_first(digits.test, 30), val=_first(digits.val, 50))
    report, final = _trial(bundle, "test", monkeypatch)
    assert report["split"] == "test" and final[EVAL_SPLIT] == "test"
    assert report["images"] == final["images"] == 30


# ------------------------------------------------------------------ the recorder's tag


def test_the_recorder_tags_a_finished_trial_with_its_split(tmp_path: Path) -> None:
    from pipeline.record.recorder import StudyRecorder
    from pipeline.record.tracking import TrackingTarget

    tracker = FakeTracker()
    recorder = StudyRecorder(
        study="s", target=TrackingTarget(uri="sqlite:///unused.db", experiment="s"), parent_id="p",
        storage=str(tmp_path), base=TrainConfig(), search_params={}, objectives=["val_acc"], total=2,
        quiet=True, tracker=tracker,  # type: ignore[arg-type]
    )  # fmt: skip
    recorder.finish(
        "t1",
        {},
        {"final": 1, "status": "ok", "val_acc": 0.5, "images": 40.0, EVAL_SPLIT: "val"},
        None,
    )
    recorder.finish(
        "t2", {}, {"final": 0, "epoch": 1, "val_acc": 0.4}, None
    )  # stopped: not evaluated
    assert tracker.tags["run-t1"][EVAL_SPLIT_TAG] == "val"
    assert EVAL_SPLIT_TAG not in tracker.tags["run-t2"]


# ------------------------------------------------------------------ the spec key


def _digits_spec(tmp_path: Path, **evaluation: Any) -> Path:
    doc = yaml.safe_load(DIGITS.read_text())
    doc["evaluation"].update(evaluation)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_default_split_is_val_and_validate_says_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_spec(DIGITS).evaluation.split == "val"
    assert cli.main(["validate", str(DIGITS)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    # digits: 144 validation images (val_fraction 0.1 of the 1,438 left by the 359 test images)
    assert "\nevaluation val split, 144 of its 144 images (max_images 500)\n" in out
    assert cli.main(["validate", str(DIGITS), "--smoke"]) == 0
    assert (
        "\nevaluation val split, 100 of its 144 images (max_images 100)\n"
        in capsys.readouterr().out
    )


def test_split_test_warns_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _digits_spec(tmp_path, split="test")
    assert load_spec(path).evaluation.split == "test"
    assert cli.main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "warning: evaluation.split: test: the objective interpretability will be selected on test images"
    )


def test_split_test_without_an_evaluation_objective_needs_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(_digits_spec(tmp_path, split="test").read_text())
    doc["objectives"] = [{"metric": "val_acc", "mode": "max"}]
    doc["smoke"].pop("objectives", None)
    path = tmp_path / "val_acc.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert cli.main(["validate", str(path)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["train", "", 3, None])
def test_a_bad_split_is_one_line_exit_2(
    value: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _digits_spec(tmp_path, split=value)
    assert cli.main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"syncstudy validate: error: {path}: evaluation.split: "), err


# ------------------------------------------------------------------ a study from before the key


def _launched_before_the_key(tmp_path: Path) -> Path:
    """A study folder whose resolved spec has no evaluation.split (its trials measured test)."""
    storage = tmp_path / "old"
    spec = load_spec(DIGITS, smoke=True, overrides={"storage": str(storage)})
    (storage / paths.EXPERIMENT_DIR).mkdir(parents=True)
    (storage / paths.EXPERIMENT_DIR / "tuner.pkl").write_bytes(b"")
    saved = dump_resolved(spec, storage / paths.SPEC_FILE)
    doc = yaml.safe_load(saved.read_text())
    del doc["evaluation"]["split"]
    saved.write_text(yaml.safe_dump(doc, sort_keys=False))
    return storage


def test_a_study_from_before_the_key_resumes_on_test_only(tmp_path: Path) -> None:
    storage = _launched_before_the_key(tmp_path)
    now = load_spec(DIGITS, smoke=True, overrides={"storage": str(storage)})
    with pytest.raises(Exception, match=r"differs .* in: evaluation \(its trials were evaluated on the test split: "
                                        r"evaluation.split test resumes it\)"):  # fmt: skip
        study._check_resume(now, storage, resume=True)
    as_it_ran = load_spec(
        _digits_spec(tmp_path, split="test"), smoke=True, overrides={"storage": str(storage)}
    )
    study._check_resume(as_it_ran, storage, resume=True)  # no error


# ------------------------------------------------------------------ syncstudy evaluate


@pytest.mark.parametrize(
    "flags, split", [([], "test"), (["--split", "val"], "val"), (["--split", "test"], "test")]
)
def test_evaluate_measures_test_unless_told(
    flags: list[str], split: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncmodel.checkpoint import save_checkpoint
    from syncmodel.data import load_data
    from syncmodel.nets import build_model

    # shapes: n_train 400 gives 44 validation images, fewer than --max-images; 1000 test images
    config = TrainConfig(dataset="shapes", width=4, n_train=400, image_size=32)
    bundle = load_data(config)
    model = build_model(config, 1, bundle.num_classes, 16)
    meta = {
        "in_channels": 1,
        "num_classes": bundle.num_classes,
        "image_size": 32,
        "layers": ["block3"],
    }
    ckpt = save_checkpoint(tmp_path / "model.safetensors", model, config, meta)
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        str(ckpt),
        "--out",
        str(out),
        "--json",
        "--max-images",
        "64",
        "--no-pictures",
        *flags,
    ]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["split"] == split == json.loads((out / "report.json").read_text())["split"]
    assert report["images"] == min(len(getattr(bundle, split)), 64)
    assert "location_instability" in report  # the validation split has landmarks and part masks too


def test_evaluate_refuses_an_unknown_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse's choices
        cli.main(
            [
                "evaluate",
                str(tmp_path / "model.safetensors"),
                "--out",
                str(tmp_path / "o"),
                "--split",
                "train",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "--split: invalid choice: 'train'" in err
        and not (tmp_path / "o").exists()
    )
