"""Defects the flat layout let through (issue 12), one test each: each failed before its fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import search
from pipeline.spec import Objective, Param, SamplerSpec, StudySpec, grid_size, load_spec
from syncmodel.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _spec(space: dict[str, Param], sampler: SamplerSpec, samples: int = 8) -> StudySpec:
    return StudySpec(
        name="defects", train=TrainConfig(), search=space, objectives=[Objective("val_acc", "max")],
        sampler=sampler, samples=samples,
    )  # fmt: skip


def test_population_size_reaches_nsga2() -> None:
    """(1) A spec's NSGA-II population (4 here) reaches the sampler."""
    spec = _spec({"lr": Param("lr", "float", 1e-4, 1e-2, log=True)}, SamplerSpec("nsga2", seed=0, population_size=4), 12)
    assert spec.sampler.population_size == 4
    assert search.make_sampler(spec)._population_size == 4


def test_digits_study_samples_with_tpe_and_six_startup_trials() -> None:
    """studies/digits.yaml's sampler, chosen by bench/sampler_efficiency.py, reaches Optuna."""
    spec = load_spec(ROOT / "studies" / "digits.yaml")
    sampler = search.make_sampler(spec)
    assert type(sampler).__name__ == "TPESampler" and sampler._n_startup_trials == 6


def test_validate_and_launch_count_one_grid() -> None:
    """(2) An integer range with log: true under grid: validate counts its points, and the
    searcher launch builds over the same points (launch refused it before)."""
    spec = _spec({"warmup_epochs": Param("warmup_epochs", "int", 1, 6, log=True)}, SamplerSpec("grid"), 6)
    space = search.grid_space(spec)
    assert space == {"warmup_epochs": [1, 2, 3, 4, 5, 6]}
    assert grid_size(spec) == len(space["warmup_epochs"])
    assert search.make_sampler(spec) is not None


def test_launch_plans_a_grid_study_by_its_size() -> None:
    """The launch path counts a grid's trials with the same function as validate (a refactor
    once left `study.planned_trials` calling a name that had moved: every grid launch failed)."""
    from pipeline.study import planned_trials

    spec = _spec({"warmup_epochs": Param("warmup_epochs", "int", 1, 6, log=True)}, SamplerSpec("grid"), 10)
    assert planned_trials(spec) == grid_size(spec) == 6


def test_evaluate_command_uses_the_annealed_epsilon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(3) `syncstudy evaluate` evaluates at the epsilon training ended with, as a trial does."""
    import syncmodel.evaluation
    from pipeline import cli
    from syncmodel.training import current_epsilon, train

    config = TrainConfig(n_train=120, epochs=2, width=8, epsilon=0.5, epsilon_final=0.2)
    result = train(config, out_dir=tmp_path / "run")
    seen: list[float] = []
    real = syncmodel.evaluation.evaluate

    def spy(*args: object, **kwargs: object):  # noqa: ANN202
        seen.append(float(kwargs["epsilon"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(syncmodel.evaluation, "evaluate", spy)
    args = ["evaluate", str(result.checkpoint), "--out", str(tmp_path / "ev"), "--max-images", "40", "--no-pictures"]
    assert cli.main(args) == 0
    assert seen == [pytest.approx(current_epsilon(config, config.epochs - 1))]
    assert seen[0] != config.epsilon


class _Tracker:
    """A tracker whose store lists a report but fails to hand it over."""

    study = "defects"

    def __init__(self, folder: Path):
        self.folder = folder

    def has_artifact(self, run_id: str, path: str) -> bool:
        return True

    def download(self, run_id: str, artifact: str, dst: Path) -> Path:
        if artifact.startswith("evaluation/"):
            raise ConnectionError("the store went away")
        src = self.folder / Path(artifact).name
        out = dst / Path(artifact).name
        out.write_bytes(src.read_bytes())
        return out


def test_export_does_not_hide_a_failed_report_download(tmp_path: Path) -> None:
    """(4) A report that is there but cannot be fetched is an error, not "not evaluated"."""
    import json

    from pipeline.export import export_trial
    from pipeline.record.tracking import TrialRecord
    from syncmodel.training import train

    result = train(TrainConfig(n_train=120, epochs=1, width=8), out_dir=tmp_path / "run")
    files = tmp_path / "files"
    files.mkdir()
    (files / "model.safetensors").write_bytes(Path(result.checkpoint).read_bytes())
    for name in ("config.yaml", "config.json"):
        (files / name).write_text(json.dumps(result.config.to_dict()))
    record = TrialRecord(trial_id="t1", run_id="r1", status="ok", metrics={"val_acc": 0.5}, params={})
    with pytest.raises(ConnectionError):
        export_trial(_Tracker(files), record, tmp_path / "out", objectives=[("val_acc", "max")], chosen_by="test")
    assert not (tmp_path / "out").exists()


def test_a_point_already_trained_is_not_trained_again() -> None:
    """(5) NSGA-II proposing a finished point: its result is reused and the sampler asked again."""
    space = {"layers": Param("layers", "categorical", choices=(["features.0"], ["features.3"], ["features.6"]))}
    spec = _spec(space, SamplerSpec("nsga2", seed=0, population_size=2), samples=3)
    searcher = search.make_searcher(spec).searcher
    trained = []
    for i in range(3):
        params = searcher.suggest(f"t{i}")
        assert params not in trained, f"trial {i} repeats {params}"
        trained.append(params)
        searcher.on_trial_complete(f"t{i}", {"final": 1, "val_acc": 0.1 * (i + 1)})


def test_read_only_commands_import_neither_ray_nor_the_study(tmp_path: Path) -> None:
    """(7) `runs`, `pareto`, `export` load only what reads a study: no Ray, no orchestration."""
    code = (
        "import sys\n"
        "from pipeline.cli import build_parser\n"
        "import importlib\n"
        "for name in ('runs', 'pareto', 'export'):\n"
        "    importlib.import_module('pipeline.commands.' + name)\n"
        "    build_parser(only=name)\n"
        "print(' '.join(m for m in ('ray', 'pipeline.study', 'pipeline.trial', 'optuna', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
