"""Post-training evaluation: the one place that turns a trained model into report.json and
neurons.parquet, used by every trial (pipeline.trial) and by `syncstudy evaluate`.

Both evaluate at the epsilon the model ended training with (`trained_epsilon`: the annealed
value when `epsilon_final` is set), so the same checkpoint gives the same module metrics in a
study and on the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.trial_files import TrialFiles
from syncmodel.config import TrainConfig


def trained_epsilon(config: TrainConfig) -> float:
    """The Sync radius of the last training epoch (`syncmodel.training.current_epsilon`)."""
    from syncmodel.training import current_epsilon

    return current_epsilon(config, config.epochs - 1)


def evaluate_into(
    out: Path,
    model: Any,
    data: Any,
    layers: list[str],
    config: TrainConfig,
    *,
    max_images: int | None,
    picture_dir: Path | None,
    epsilon: float | None = None,
    mdl: bool = False,
    device: Any = None,
) -> tuple[dict[str, Any], Any]:
    """`syncmodel.evaluation.evaluate` at `epsilon` (default: `trained_epsilon(config)`), seeded
    by `config.seed`; writes report.json and neurons.parquet into `out` (each atomically) and
    returns (report, neurons table)."""
    import pyarrow.parquet as pq

    from syncmodel.evaluation import evaluate
    from syncmodel.files import atomic_write

    report, neurons = evaluate(
        model, data, layers, max_images=max_images,
        epsilon=trained_epsilon(config) if epsilon is None else epsilon, mdl=mdl,
        seed=config.seed, picture_dir=picture_dir, device=device,
    )  # fmt: skip
    files = TrialFiles(out)
    text = json.dumps(report, indent=2, allow_nan=True)
    atomic_write(files.report, lambda tmp: Path(tmp).write_text(text))
    atomic_write(files.neurons, lambda tmp: pq.write_table(neurons, tmp))
    return report, neurons
