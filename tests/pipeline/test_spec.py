"""Study specs that are valid: the shipped studies, resolution, the smoke form, round trips."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.redact import redact
from pipeline.spec import (
    SpecError,
    StudySpec,
    check_fits_local,
    describe,
    dump_resolved,
    grid_size,
    grid_values,
    load_spec,
    spec_to_dict,
)
from pipeline.spec.arms import is_comparison, load_comparison
from pipeline.spec.metrics import METRICS, RECORDED
from pipeline.spec.reading import StrictLoader
from syncmodel.catalog import known_names

ROOT = Path(__file__).parents[2]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))

MINIMAL = """\
name: tiny
train: {epochs: 2}
search:
  lambda_focus: {low: 1e-3, high: 1.0, log: true}
objectives:
  - {metric: test_acc}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def minimal(tmp_path: Path, **sections: object) -> Path:
    """MINIMAL with top-level keys replaced (or added)."""
    doc = {**yaml.load(MINIMAL, Loader=StrictLoader), **sections}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def comparable(spec: StudySpec) -> StudySpec:
    return dataclasses.replace(spec, source=None, smoke=False)


# --------------------------------------------------------------------------- shipped studies


def test_studies_are_shipped() -> None:
    assert {p.stem for p in STUDIES} >= {"digits", "shapes", "cifar10-resnet18"}


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_validates(path: Path, smoke: bool, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["validate", str(path)] + (["--smoke"] if smoke else [])
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.strip().endswith(f"ok: {path} is valid")
    assert ("(smoke form)" in out) == smoke


def test_digits_is_the_main_job() -> None:
    spec = load_spec(ROOT / "studies/digits.yaml")
    assert spec.samples >= 12 and spec.concurrency == 2
    assert spec.train.dataset == "digits" and spec.train.backbone == "simple_cnn"
    assert [o.metric for o in spec.objectives] == ["val_acc", "interpretability"]  # never tuned on test
    assert {"lambda_focus", "coupling_K", "epsilon"} <= set(spec.search)
    assert spec.resources.cpu == 1 and spec.resources.gpu == 0
    check_fits_local(spec)  # runs on this machine without a cluster
    smoke = load_spec(ROOT / "studies/digits.yaml", smoke=True)
    assert (smoke.samples, smoke.train.epochs, smoke.train.n_train) == (2, 1, 300)


def test_cifar_smoke_form_runs_without_gpu_or_cifar() -> None:
    full = load_spec(ROOT / "studies/cifar10-resnet18.yaml")
    assert (full.train.dataset, full.train.backbone, full.train.epochs) == ("cifar10", "resnet18", 30)
    assert (full.samples, full.concurrency, full.resources.gpu, full.resources.cpu) == (64, 16, 0.25, 2)
    smoke = load_spec(ROOT / "studies/cifar10-resnet18.yaml", smoke=True)
    assert smoke.train.dataset == "fake-cifar10" and smoke.train.n_train == 256
    assert (smoke.samples, smoke.train.epochs, smoke.resources.gpu, smoke.resources.cpu) == (2, 1, 0, 1)
    check_fits_local(smoke)


def test_shapes_optimises_a_part_metric() -> None:
    spec = load_spec(ROOT / "studies/shapes.yaml")
    assert spec.train.dataset == "shapes"
    assert any(METRICS[o.metric].needs_parts for o in spec.objectives)


# --------------------------------------------------------------------------- resolution


def test_minimal_spec_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.storage == str(tmp_path / "runs" / "tiny")
    assert spec.source == tmp_path / "spec.yaml"
    p = spec.search["lambda_focus"]
    assert (p.kind, p.low, p.high, p.log) == ("float", 1e-3, 1.0, True)  # 1e-3 is a float
    assert spec.objectives[0].mode == "max"  # the catalog's direction for test_acc
    assert (spec.sampler.name, spec.scheduler.name, spec.samples, spec.concurrency) == ("tpe", "none", 8, 1)
    assert spec.tracking.uri is None and spec.retries == 0


def test_yaml_12_scalars(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, """\
        name: on
        description: no
        search:
          epsilon: {low: 2E-1, high: .8}
          coupling_K: {low: 1e-3, high: 1e+1, log: true}
          focus_kind: {choices: [spread, template]}
        objectives: [{metric: test_acc}]
        evaluation: {enabled: false, pictures: False}
        """))
    assert (spec.name, spec.description) == ("on", "no")  # not True / False (YAML 1.1)
    assert spec.search["epsilon"].low == 0.2 and spec.search["epsilon"].high == 0.8
    assert spec.search["coupling_K"].high == 10.0
    assert spec.evaluation.enabled is False and spec.evaluation.pictures is False


def test_kinds_of_dimension(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, """\
        name: kinds
        search:
          warmup_epochs: {low: 0, high: 4, step: 2}
          k: {choices: [null, 4, 8]}
          epsilon: {low: 0.2, high: 0.8, step: 0.2}
          lr: 3.0e-3
        objectives: [{metric: val_acc}]
        sampler: grid
        samples: 36
        """))
    w, k, e, lr = (spec.search[n] for n in ("warmup_epochs", "k", "epsilon", "lr"))
    assert (w.kind, w.low, w.high, w.step) == ("int", 0, 4, 2)
    assert k.kind == "categorical" and k.choices == (None, 4, 8)
    assert lr.kind == "fixed" and lr.value == 3e-3
    assert grid_values(w) == [0, 2, 4] and grid_values(e) == [0.2, 0.4, 0.6, 0.8]
    assert grid_size(spec) == 36
    assert describe(w) == "int     [0, 4] step 2" and describe(k) == "choice  None | 4 | 8"


def test_smoke_form_overlays_sections(tmp_path: Path) -> None:
    path = minimal(
        tmp_path, samples=10, resources={"cpu": 1, "gpu": 0},
        smoke={"samples": 2, "train": {"n_train": 100}, "search": {"lambda_focus": {"low": 0.1, "high": 0.2}}},
    )
    full, smoke = load_spec(path), load_spec(path, smoke=True)
    assert (full.samples, full.train.n_train, full.smoke) == (10, None, False)
    assert (smoke.samples, smoke.train.n_train, smoke.train.epochs, smoke.smoke) == (2, 100, 2, True)
    assert smoke.search["lambda_focus"].low == 0.1 and not smoke.search["lambda_focus"].log


def test_smoke_section_is_validated_when_not_applied(tmp_path: Path) -> None:
    path = minimal(tmp_path, smoke={"samples": 0})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == "smoke.samples"
    assert str(info.value).startswith(f"{path}: smoke.samples: must be >= 1")


def test_smoke_asked_but_missing(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no smoke section"):
        load_spec(write(tmp_path, MINIMAL), smoke=True)


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    spec = load_spec(path, overrides={"storage": str(tmp_path / "s"), "tracking.uri": "http://127.0.0.1:5000",
                                      "samples": None})
    assert spec.storage == str(tmp_path / "s") and spec.tracking.uri == "http://127.0.0.1:5000"
    assert spec.samples == 8  # None = flag not given
    with pytest.raises(SpecError, match=r"tracking\.uri: unknown scheme 'ftp'.*\(from the command line\)"):
        load_spec(path, overrides={"tracking.uri": "ftp://x"})


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    spec = load_spec(minimal(
        tmp_path, storage="out/here", train={"dataset": "mnist", "data_root": "mnist"},
        tracking={"uri": "sqlite:///db/mlflow.db", "artifact_location": "art"},
    ))
    assert spec.storage == str(tmp_path / "out/here")
    assert spec.train.data_root == str(tmp_path / "mnist")
    assert spec.tracking.uri == f"sqlite:///{tmp_path}/db/mlflow.db"
    assert spec.tracking.artifact_location == str(tmp_path / "art")


def test_download_skips_the_data_root_check(tmp_path: Path) -> None:
    spec = load_spec(minimal(tmp_path, train={"dataset": "cifar10", "download": True, "data_root": "/nonexistent/x"}))
    assert spec.train.data_root == "/nonexistent/x"


def test_data_check_can_be_left_to_the_workers(tmp_path: Path) -> None:
    path = minimal(tmp_path, train={"dataset": "mnist", "data_root": "/nonexistent/mnist"})
    with pytest.raises(SpecError, match="train.data_root: folder /nonexistent/mnist does not exist"):
        load_spec(path)
    assert load_spec(path, check_data=False).train.data_root == "/nonexistent/mnist"


def test_env_reference_in_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCSTUDY_DB_PASSWORD", "s3cret")
    path = write(tmp_path, MINIMAL + 'tracking: {uri: "postgresql://mlflow:${SYNCSTUDY_DB_PASSWORD}@db/mlflow"}\n')
    spec = load_spec(path)
    assert spec.tracking.uri == "postgresql://mlflow:s3cret@db/mlflow"  # what MLflow gets
    assert "s3cret" not in str(spec_to_dict(spec))  # what is written next to results
    assert redact(spec.tracking.uri) == "postgresql://***@db/mlflow"  # the user name too


def test_asha_resolves_its_metric(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL.replace("test_acc", "val_acc") + "scheduler: asha\n"))
    s = spec.scheduler
    assert (s.name, s.metric, s.mode, s.grace_period, s.reduction_factor) == ("asha", "val_acc", "max", 1, 2.0)
    spec = load_spec(write(tmp_path, MINIMAL + "scheduler: {name: asha, metric: ce_loss}\n"))
    assert (spec.scheduler.metric, spec.scheduler.mode) == ("ce_loss", "min")


def test_round_trip(tmp_path: Path) -> None:
    """The resolved spec written next to results reads back to the same spec."""
    for path in STUDIES:
        for smoke in (False, True):
            # a comparison (arms:) is its arm x repeat studies, each an ordinary study
            specs = (
                [s for _, _, s in load_comparison(path, smoke=smoke).studies()]
                if is_comparison(path) else [load_spec(path, smoke=smoke)]
            )  # fmt: skip
            for spec in specs:
                out = dump_resolved(spec, tmp_path / f"{spec.name}-{smoke}.yaml")
                assert out.read_text().startswith("# resolved study spec")
                assert comparable(load_spec(out)) == comparable(spec)


def test_errors_name_the_file_once(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "samples: -1\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    exc = info.value
    assert (exc.file, exc.field) == (str(path), "samples")
    assert str(exc) == f"{path}: samples: must be >= 1, got -1"


# --------------------------------------------------------------------------- local fit


def test_check_fits_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpus = len(os.sched_getaffinity(0))
    spec = load_spec(write(tmp_path, MINIMAL + f"resources: {{cpu: {cpus + 1}}}\n"))
    with pytest.raises(SpecError, match=r"resources\.cpu: .*--address"):
        check_fits_local(spec)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    spec = load_spec(write(tmp_path, MINIMAL + "resources: {cpu: 1, gpu: 0.25}\n"))
    with pytest.raises(SpecError, match=r"resources\.gpu: .*no GPU is visible"):
        check_fits_local(spec)


# --------------------------------------------------------------------------- names and metrics


def test_names_come_from_syncmodel_registries() -> None:
    assert {"digits", "shapes", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder",
            "fake-cifar10"} <= set(known_names("dataset"))
    assert {"simple_cnn", "resnet18", "vgg11_bn"} <= set(known_names("backbone"))


def test_catalog_matches_what_evaluate_reports() -> None:
    evaluate = pytest.importorskip("syncmodel.evaluation")
    reported = set(evaluate.LAYER_KEYS) | set(evaluate.LOCATION_KEYS) | set(evaluate.DETECTOR_KEYS)
    evaluated = {name for name, info in METRICS.items() if info.evaluation}
    assert evaluated <= reported, evaluated - reported


def test_merge_keys_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + textwrap.dedent("""\
        name: merge
        search:
          epsilon: &range {low: 0.2, high: 0.8}
          coupling_K:
            <<: *range
            high: 2.0
        objectives: [{metric: test_acc}]
        """).encode())
    spec = load_spec(path)
    assert (spec.search["coupling_K"].low, spec.search["coupling_K"].high) == (0.2, 2.0)


def test_reference_documents_every_key() -> None:
    from pipeline.spec.sections import TOP_KEYS
    from syncmodel.config import TrainConfig

    doc = (ROOT / "docs" / "spec.md").read_text()
    for key in [*TOP_KEYS, *TrainConfig.field_names(), *METRICS, *RECORDED]:
        assert f"`{key}`" in doc, key
