"""A comparison spec (`arms:`) expands into one study spec per arm x repeat, each checked as a
study; an error in an arm names it (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.spec.arms import is_comparison, load_comparison
from pipeline.spec.reading import SpecError

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "studies" / "compare-shapes.yaml"


def _write(tmp_path: Path, edit: object = None) -> Path:
    doc = yaml.safe_load(SPEC.read_text())
    doc["storage"] = str(tmp_path / "cmp")
    doc["smoke"]["storage"] = str(tmp_path / "cmp-smoke")
    if edit is not None:
        edit(doc)  # type: ignore[operator]
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_expands_into_one_study_per_arm_and_repeat(tmp_path: Path) -> None:
    comp = load_comparison(_write(tmp_path))
    assert list(comp.arms) == ["plain", "icnn", "sinn", "gate"]
    assert comp.repeats == 3 and comp.samples == 24
    assert comp.reference == {"val_acc": 0.0, "location_instability": 0.2, "interpretability": 0.0}
    assert comp.margin == 0.002
    names = [s.name for _, _, s in comp.studies()]
    assert len(names) == len(set(names)) == 12
    # repeat by repeat, every arm in each
    assert names[:4] == [f"compare-shapes-{a}-r0" for a in comp.arms]
    uris = {s.tracking.uri for _, _, s in comp.studies()}
    assert uris == {f"sqlite:///{tmp_path / 'cmp' / 'mlflow.db'}"}
    assert {s.tracking.experiment for _, _, s in comp.studies()} == {"compare-shapes"}
    for arm, k, s in comp.studies():
        assert s.storage == str(tmp_path / "cmp" / f"{arm}-r{k}")
        assert s.sampler.seed == k and s.train.seed == k  # paired across arms, distinct across repeats
        assert s.samples == 24 and [o.metric for o in s.objectives] == ["val_acc", "location_instability", "interpretability"]
        assert s.train.image_size == 32 and s.train.dataset == "shapes"
    plain, icnn, sinn = comp.arms["plain"][0], comp.arms["icnn"][0], comp.arms["sinn"][0]
    assert list(plain.searched()) == ["lr", "weight_decay"] and plain.train.lambda_focus == 0.0
    assert icnn.train.focus_kind == "icnn" and icnn.search["lambda_focus"].low == 1e-7
    assert icnn.search["lambda_focus"].low < 1e-6 < icnn.search["lambda_focus"].high  # the released value inside
    assert set(sinn.searched()) == {"lambda_focus", "coupling_K", "epsilon", "warmup_epochs", "focus_kind"}


def test_smoke_form_keeps_the_arms_it_names(tmp_path: Path) -> None:
    comp = load_comparison(_write(tmp_path), smoke=True)
    assert list(comp.arms) == ["plain", "gate"] and comp.repeats == 2 and comp.samples == 2
    assert all(s.train.epochs == 1 and s.smoke for _, _, s in comp.studies())
    assert comp.storage == str(tmp_path / "cmp-smoke")


def test_a_field_the_arm_searches_is_dropped_from_the_common_train(tmp_path: Path) -> None:
    def edit(doc: dict) -> None:
        doc["train"]["lr"] = 0.005

    comp = load_comparison(_write(tmp_path, edit))
    assert comp.arms["plain"][0].search["lr"].kind == "float"  # the arm's search wins
    assert comp.arms["icnn"][0].train.lr == 0.005  # the others keep the common value


def test_is_comparison(tmp_path: Path) -> None:
    assert is_comparison(SPEC)
    assert not is_comparison(ROOT / "studies" / "shapes.yaml")
    assert not is_comparison(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["arms"]["plain"]["train"].update(lambda_focuss=1.0), "arms.plain.train.lambda_focuss"),
        (lambda d: d["arms"]["plain"]["train"].update(lr=-1.0), "arms.plain.train.lr"),
        (lambda d: d["arms"]["icnn"]["search"]["lambda_focus"].update(low=-1.0), "arms.icnn.search.lambda_focus.low"),
        (lambda d: d["arms"]["gate"].update(searchh={}), "arms.gate.searchh"),
        (lambda d: d["arms"]["gate"].pop("search"), "arms.gate.search"),
        (lambda d: d["arms"].update({"Bad arm": {"search": {}}}), "arms.'Bad arm'"),
        (lambda d: d.update(arms={"plain": d["arms"]["plain"]}), "arms"),
        (lambda d: d.update(repeats=1), "repeats"),
        (lambda d: d["reference"].pop("val_acc"), "reference.val_acc"),
        (lambda d: d["reference"].update(test_acc=0.0), "reference.test_acc"),
        (lambda d: d.update(equivalence_margin={"hypervolume": 0}), "equivalence_margin.hypervolume"),
        (lambda d: d.update(search={"lr": {"low": 0.1, "high": 1}}), "search"),
        (lambda d: d["smoke"].update(arms=["plain", "nope"]), "smoke.arms[1]"),
        (lambda d: d["smoke"]["train"].update(epochs=0), "smoke.train.epochs"),
    ],
)
def test_a_bad_field_is_named_in_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, edit: object, field: str) -> None:
    path = _write(tmp_path, edit)
    with pytest.raises(SpecError) as info:
        load_comparison(path)
    assert info.value.field == field
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and str(path) in err[0]
    assert not (tmp_path / "cmp").exists()  # nothing written


def test_validate_checks_every_arm(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(_write(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "12 checked" in out and "4 x 3 repeats x 24 trials = 288 trials" in out


def test_launch_refuses_a_bad_arm_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, lambda d: d["arms"]["sinn"]["search"].update(coupling_KK={"low": 0.1, "high": 1}))
    assert main(["launch", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "arms.sinn.search.coupling_KK" in err[0]
    assert not (tmp_path / "cmp").exists()


def test_launch_over_a_started_comparison_needs_resume_and_the_same_spec(tmp_path: Path) -> None:
    """`check_start`: what a second launch meets (no Ray, no MLflow: it is checked first)."""
    import yaml as _yaml

    from pipeline.comparison import check_start
    from pipeline.spec.arms import SAVED_FILE, saved_form
    from syncmodel.errors import SyncStudyError

    comp = load_comparison(_write(tmp_path))
    with pytest.raises(SyncStudyError, match="no comparison to resume"):
        check_start(comp, resume=True)
    check_start(comp, resume=False)  # a fresh folder: fine
    tune = tmp_path / "cmp" / "icnn-r1" / "tune"
    tune.mkdir(parents=True)
    (tune / "tuner.pkl").write_bytes(b"")
    with pytest.raises(SyncStudyError, match="already ran.*--resume"):
        check_start(comp, resume=False)
    saved = saved_form(comp)
    (tmp_path / "cmp" / SAVED_FILE).write_text(_yaml.safe_dump(saved))
    check_start(comp, resume=True)  # the same spec: resumes
    (tmp_path / "cmp" / SAVED_FILE).write_text(_yaml.safe_dump({**saved, "samples": 30}))
    with pytest.raises(SyncStudyError, match="differs.*samples"):
        check_start(comp, resume=True)
