"""Post-training evaluation: the one place that turns a trained model into report.json and
neurons.parquet, used by every trial (pipeline.trial) and by `syncstudy evaluate`.

Both evaluate at the epsilon the model ended training with (`trained_epsilon`: the annealed
value when `epsilon_final` is set), so the same checkpoint gives the same module metrics in a
study and on the command line. They differ in the split by default: a trial measures the
validation split (`evaluation.split: val`: its evaluation metrics may be objectives, and what
selects a model must not be the test split it is reported on), `syncstudy evaluate` the test
split (a report on a finished model); each says which in report.json ("split", "images").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.trial_files import TrialFiles
from syncmodel.config import TrainConfig
from syncmodel.errors import DataError

if TYPE_CHECKING:  # torch: imported by the evaluation itself, not by who imports this module
    from syncmodel.data import DataBundle


def trained_epsilon(config: TrainConfig) -> float:
    """The Sync radius of the last training epoch (`syncmodel.training.current_epsilon`)."""
    from syncmodel.training import current_epsilon

    return current_epsilon(config, config.epochs - 1)


SPLITS = ("val", "test")  # the DataBundle splits an evaluation may measure


def evaluate_into(
    out: Path,
    model: Any,
    data: DataBundle,
    layers: list[str],
    config: TrainConfig,
    *,
    split: str,
    max_images: int | None,
    picture_dir: Path | None,
    epsilon: float | None = None,
    mdl: bool = False,
    device: Any = None,
) -> tuple[dict[str, Any], Any]:
    """`syncmodel.evaluation.evaluate` of the first `max_images` images of `data`'s `split`
    ("val" or "test") at `epsilon` (default: `trained_epsilon(config)`), seeded by
    `config.seed`; writes report.json (the report, with "split" beside its "images" count) and
    neurons.parquet into `out` (each atomically) and returns (report, neurons table).

    Raises `DataError` when the split holds no image (val_fraction 0 and split "val")."""
    import pyarrow.parquet as pq

    from syncmodel.evaluation import evaluate
    from syncmodel.files import atomic_write

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images = getattr(data, split)
    if len(images) == 0:
        raise DataError(
            f"{data.name}: the {split} split holds no image to evaluate"
            + (" (val_fraction 0: no validation split)" if split == "val" else "")
        )
    report, neurons = evaluate(
        model, images, layers, max_images=max_images,
        epsilon=trained_epsilon(config) if epsilon is None else epsilon, mdl=mdl,
        num_classes=data.num_classes, image_size=data.image_size, part_names=data.part_names or None,
        seed=config.seed, picture_dir=picture_dir, device=device,
    )  # fmt: skip
    report = {"split": split, **report}
    files = TrialFiles(out)
    text = json.dumps(report, indent=2, allow_nan=True)
    atomic_write(files.report, lambda tmp: Path(tmp).write_text(text))
    atomic_write(files.neurons, lambda tmp: pq.write_table(neurons, tmp))
    return report, neurons
