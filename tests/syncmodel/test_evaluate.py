"""`syncmodel.evaluate` and `syncstudy evaluate`: documented keys, one table row per neuron."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from syncmodel.data import Split
from syncmodel.evaluation import DETECTOR_KEYS, LAYER_KEYS, LOCATION_KEYS, evaluate

C, K, N, S = 6, 3, 48, 8


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU())
        self.fc = nn.Linear(C, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(x).mean((2, 3)))


def _split(parts: bool = True) -> Split:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(N, 1, S, S, generator=g)
    labels = torch.arange(N) % K
    if not parts:
        return Split(images, labels)
    landmarks = 1 + 6 * torch.rand(N, 2, 2, generator=g)
    masks = torch.zeros(N, 2, S, S, dtype=torch.bool)
    masks[:, 0, :4, :4] = True
    masks[:, 1, 4:, 4:] = True
    return Split(images, labels, landmarks, masks)


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return Tiny()


def test_report_has_the_documented_keys(model: nn.Module) -> None:
    report, _ = evaluate(model, _split(), ["block"], batch_size=16)
    expected = {"accuracy", "images", "eval_seconds", *LAYER_KEYS, *LOCATION_KEYS, *DETECTOR_KEYS}
    expected |= {f"accuracy_class_{k}" for k in range(K)}
    assert set(report) == expected
    assert all(isinstance(v, (int, float)) for v in report.values())
    assert 0.0 <= report["interpretability"] <= 1.0
    assert report["images"] == N and report["neurons"] == C


def test_location_and_detector_keys_only_with_ground_truth(model: nn.Module) -> None:
    report, table = evaluate(model, _split(parts=False), ["block"])
    assert not set(LOCATION_KEYS + DETECTOR_KEYS) & set(report)
    assert table.column("detector_iou").null_count == C


def test_table_has_one_row_per_neuron(model: nn.Module) -> None:
    _, table = evaluate(model, _split(), ["block"], max_images=32)
    assert table.num_rows == C
    assert table.column("neuron").to_pylist() == list(range(C))
    for name in ("layer", "module", "spread", "position_information", "selectivity", "mis",
                 "detector_iou", "dead"):  # fmt: skip
        assert name in table.column_names


def test_dead_neurons_are_flagged(model: nn.Module) -> None:
    with torch.no_grad():
        model.block[1].bias[:2] = -100.0  # BN shift far below the ReLU: channels 0, 1 never fire
        model.block[1].bias[2:] = 100.0  # the others always do
    report, table = evaluate(model, _split(), ["block"])
    assert table.column("dead").to_pylist()[:3] == [True, True, False]
    assert table.column("module").to_pylist()[:2] == [-1, -1]
    assert math.isclose(report["dead_fraction"], 2 / C)


def test_random_ablation_control_can_be_switched_off(model: nn.Module) -> None:
    kw = dict(epsilon=1.9)  # coarse: modules form, so ablation runs
    with_control, _ = evaluate(model, _split(parts=False), ["block"], **kw)
    without, _ = evaluate(model, _split(parts=False), ["block"], ablation_controls=0, **kw)
    assert with_control["modules"] > 0
    assert not math.isnan(with_control["ablation_own_drop_beyond_random"])
    assert math.isnan(without["ablation_own_drop_beyond_random"])
    assert without["ablation_own_drop"] == with_control["ablation_own_drop"]


def test_two_layers_are_prefixed_and_averaged(model: nn.Module) -> None:
    report, table = evaluate(model, _split(parts=False), ["block", "block.2"], ablation=False)
    assert report["neurons"] == 2 * C and table.num_rows == 2 * C
    assert report["block/spread"] == report["block.2/spread"] == report["spread"]


def test_eval_mode_is_restored_and_unknown_layers_raise(model: nn.Module) -> None:
    from syncmodel.errors import ConfigError

    model.train()
    evaluate(model, _split(), ["block"])
    assert model.training
    with pytest.raises(ConfigError, match="nope"):
        evaluate(model, _split(), ["nope"])


def test_pictures_are_written(model: nn.Module, tmp_path) -> None:
    evaluate(model, _split(), ["block"], picture_dir=tmp_path, epsilon=1.9)  # coarse: modules form
    names = {p.name for p in tmp_path.iterdir()}
    assert "block_similarity.png" in names
    assert any(n.startswith("block_module") for n in names)


def test_cli_missing_checkpoint_exits_2(tmp_path, capsys) -> None:
    from pipeline.cli import main

    missing = tmp_path / "nothing.pt"
    assert main(["evaluate", str(missing), "--dataset", "shapes", "--out", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_writes_report_table_and_pictures(tmp_path, capsys) -> None:
    pytest.importorskip("syncmodel.nets")
    import pyarrow.parquet as pq

    from pipeline.cli import main
    from syncmodel.checkpoint import save_checkpoint
    from syncmodel.config import TrainConfig
    from syncmodel.nets import build_model

    config = TrainConfig(dataset="shapes", width=4, n_train=40, image_size=32)
    model = build_model(config, 1, 4, 16)
    meta = {"in_channels": 1, "num_classes": 4, "image_size": 32, "layers": ["block3"]}
    ckpt = save_checkpoint(tmp_path / "model.safetensors", model, config, meta)
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        str(ckpt),
        "--dataset",
        "shapes",
        "--out",
        str(out),
        "--json",
        "--max-images",
        "64",
    ]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(last)
    # --json prints undefined values (NaN in report.json, as a trial's report has them) as null
    written = json.loads((out / "report.json").read_text())
    assert report == {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in written.items()}
    assert report["images"] == 64 and "location_instability" in report
    assert pq.read_table(out / "neurons.parquet").num_rows == 8
    assert (out / "block3_similarity.png").exists()
