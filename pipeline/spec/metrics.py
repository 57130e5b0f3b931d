"""The metrics a trial reports, by name: what a study may optimise (objectives) or schedule on.

One table, read by the spec validator and mirrored in docs/spec.md. Names are the keys that
syncmodel.train (history, final metrics) and syncmodel.evaluate (report) produce;
tests/pipeline/test_spec.py checks them against syncmodel.evaluate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricInfo:
    mode: str  # the better direction, "max" | "min": an objective's default mode
    per_epoch: bool  # reported after every epoch (ASHA can compare it), not only at the end
    help: str
    needs_parts: bool = False  # needs landmarks / part masks: a data set in PART_DATASETS
    evaluation: bool = False  # computed by syncmodel.evaluate after training (evaluation.enabled)


def _ev(mode: str, help: str, needs_parts: bool = False) -> MetricInfo:
    return MetricInfo(mode, False, help, needs_parts, evaluation=True)


METRICS: dict[str, MetricInfo] = {
    # syncmodel.train, every epoch (the last epoch's value is also a final metric)
    "val_acc": MetricInfo("max", True, "top-1 accuracy on the validation split"),
    "train_acc": MetricInfo("max", True, "top-1 accuracy on the epoch's training batches"),
    "train_loss": MetricInfo("min", True, "training loss: CE + focus + coupling terms"),
    "ce_loss": MetricInfo("min", True, "cross-entropy part of the training loss"),
    "focus_loss": MetricInfo("min", True, "focus regulariser (activation spread), unweighted"),
    "sync_loss": MetricInfo("min", True, "coupling (Kuramoto) loss, unweighted"),
    "spread": MetricInfo("min", True, "activation-weighted spread around the focus (val; final: test)"),
    "dead_fraction": MetricInfo("min", True, "fraction of regularised neurons never active"),
    "neighbours": MetricInfo("max", True, "mean neighbours per neuron within epsilon"),
    "interp_estimate": MetricInfo(
        "max", True, "interpretability on 256 fixed val images, no ablation (train.epoch_estimate; a rung signal)"
    ),
    # syncmodel.train, at the end
    "test_acc": MetricInfo("max", False, "top-1 accuracy on the test split"),
    "train_time": MetricInfo("min", False, "training wall time, seconds"),
    "best_val_acc": MetricInfo("max", False, "validation accuracy of the best epoch (the result stays the last)"),
    "best_epoch": MetricInfo("max", False, "the epoch (1-based) of best_val_acc, the first on ties"),
    # syncmodel.evaluate, after training (docs/design.md §1.4)
    "interpretability": _ev("max", "composite score in [0, 1] that collapse cannot raise and synchrony does not lower (syncmodel.metrics.score)"),
    "interpretability_v2": _ev("max", "the second composite (graded distinct modules over classes - 1, 1 - largest): kept for old rows"),
    "interpretability_v1": _ev("max", "the first composite (distributedness between neurons, raw ARI): kept for old rows"),
    "entropy": _ev("min", "normalised spatial entropy of the activation maps"),
    "peak_mass": _ev("max", "activation mass near the focus"),
    "position_information": _ev("max", "how much a neuron's peak position varies with the image (normalised JSD)"),
    "selectivity": _ev("max", "class selectivity index (Morcos et al. 2018)"),
    "mis": _ev("max", "mean max mutual information with a class (Liang et al. 2020), plug-in estimate"),
    "mis_chance": _ev("min", "the same MIS estimate with permuted labels: its chance level"),
    "mis_above_chance": _ev("max", "MIS minus its chance level"),
    "effective_neurons": _ev("max", "participation ratio of the response correlation's eigenvalues"),
    "distributedness": _ev("max", "effective_neurons / neurons: 1/C for clones, ~1 for independent neurons"),
    "effective_units": _ev("max", "participation ratio over functional units (a Sync module counts once); the composite's collapse gate reads it"),
    "module_distributedness": _ev("max", "min(1, effective_units / (classes - 1)): distributed over enough distinct units"),
    "between_module_distributedness": _ev("max", "min(1, PR of the modules alone / (classes - 1)): the second composite's distributedness"),
    "modules": _ev("max", "functional modules found by Sync clustering"),
    "coverage": _ev("max", "fraction of neurons in a module of >= 2"),
    "largest_module": _ev("min", "share of the neurons in the largest module"),
    "consistency_ari": _ev("max", "ARI of the modules found on two halves of the data (NaN if degenerate)"),
    "consistency_ari_null": _ev("min", "95% point of the ARI of random partitions with the modules' sizes"),
    "consistency_ari_corrected": _ev("max", "ARI beyond consistency_ari_null, rescaled to [0, 1] (NaN if degenerate)"),
    "consistency_nmi": _ev("max", "NMI of the modules found on two halves of the data (NaN if degenerate)"),
    "specificity": _ev("max", "within- minus between-module correlation, on the half the modules were not built from"),
    "class_purity": _ev("max", "class purity of the modules' mean responses, held out"),
    "within_corr": _ev("max", "mean response correlation within modules, held out"),
    "between_corr": _ev("min", "mean response correlation between modules, held out"),
    "ablation_own_drop": _ev("max", "accuracy drop on a module's own classes when it is zeroed"),
    "ablation_other_drop": _ev("min", "accuracy drop on the other classes when a module is zeroed"),
    "ablation_own_drop_beyond_random": _ev("max", "own-class drop minus that of size-matched random neuron sets"),
    "ablation_other_drop_beyond_random": _ev("min", "other-class drop minus that of size-matched random neuron sets"),
    "location_instability": _ev("min", "ICNN location instability, its released protocol (landmarks)", needs_parts=True),
    "location_instability_heldout": _ev("min", "ICNN's protocol, category chosen on one half, scored on the other", needs_parts=True),
    "location_instability_part_heldout": _ev("min", "best part chosen on one half, scored on the other", needs_parts=True),
    "detectors": _ev("max", "units detecting a part (Network Dissection)", needs_parts=True),
    "unique_parts": _ev("max", "distinct parts with a detector", needs_parts=True),
    "detector_fraction": _ev("max", "fraction of units that are part detectors", needs_parts=True),
}

# Also logged, never objectives (docs/spec.md lists them under the metrics): name → (where, help).
# "epoch": an epoch/<name> series; "final": a final metric; "evaluation": eval/<name>.
RECORDED: dict[str, tuple[str, str]] = {
    "lr": ("epoch", "the learning rate at the epoch's last step (train.lr_schedule)"),
    "epsilon": ("epoch", "the Sync neighbourhood radius used in the epoch (epsilon annealed to epsilon_final)"),
    "epoch_time": ("epoch", "the epoch's wall time, seconds (validation included)"),
    "estimate_time": ("epoch", "seconds of the epoch's interp_estimate (train.epoch_estimate)"),
    "epochs_run": ("final", "epochs trained (fewer than train.epochs when the trial was stopped)"),
    "accuracy_class_{k}": ("evaluation", "accuracy on class k, on the evaluated split (evaluation.split)"),
    "module_size": ("evaluation", "mean size of the modules of >= 2 neurons"),
    "detector_iou": ("evaluation", "mean best IoU of the units with their part (part data sets only)"),
}

# Data sets with ground-truth landmarks and part masks (docs/design.md §2).
PART_DATASETS = ("shapes", "shapes-hard")


def per_epoch_metrics() -> list[str]:
    return [name for name, info in METRICS.items() if info.per_epoch]


# ---------------------------------------------------------------------------------------------
# How a trial's final metrics are named in MLflow (pipeline.record.tracking writes and reads
# them; the Parquet tables keep the bare names above). Objectives and BARE are bare; the
# test-set values train() reports beside its per-epoch validation ones are test/<name>; everything syncmodel.evaluate reports is
# eval/<name>. Left out of MLflow (they repeat another value; read back from it):
FINAL_FROM_LAST_EPOCH = ("train_loss", "ce_loss", "focus_loss", "sync_loss", "train_acc", "interp_estimate")  # epoch/<name>
# the evaluation's accuracy on the first max_images images of its split (evaluation.split):
# val_acc's images by default, test_acc's with split test
DROPPED = {"accuracy": "val_acc / test_acc"}
# train()'s own finals: val_acc is the last epoch's (the result), best_val_acc the best epoch's
# (the highest epoch/val_acc; it differs from val_acc when a later epoch was worse).
BARE = ("test_acc", "val_acc", "train_time", "epochs_run", "best_val_acc", "best_epoch")
EPOCH_PREFIX = "epoch/"  # pipeline.record.tracking.EPOCH_PREFIX: per-epoch series
TEST_PREFIX = "test/"  # train()'s final spread, dead_fraction, neighbours: on the test split
TEST_SET = ("spread", "dead_fraction", "neighbours")
EVAL_PREFIX = "eval/"
TRAIN_FINALS = (*BARE, *FINAL_FROM_LAST_EPOCH, *TEST_SET)  # every other final key: the evaluation's


# The evaluation's bookkeeping (how much it evaluated, with which setting), not measurements:
# eval/<name> (per layer eval/<layer>/<name>) is logged as a param, and its wall time as the
# tag EVAL_SECONDS_TAG (pipeline.record.tracking.Tracker.finish_trial).
BOOKKEEPING = ("images", "neurons", "sync_steps", "epsilon")
EVAL_SECONDS = EVAL_PREFIX + "eval_seconds"
EVAL_SECONDS_TAG = "syncstudy.eval_seconds"
# The split the evaluation measured (evaluation.split: "val" or "test"): text, so neither a
# metric nor a Parquet column. A trial's final.json holds it as EVAL_SPLIT, and the driver
# tags the trial's run with it (EVAL_SPLIT_TAG, beside the eval/images param it counts).
EVAL_SPLIT = "eval_split"
EVAL_SPLIT_TAG = "syncstudy.eval_split"


def split_bookkeeping(logged: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """`mlflow_metrics`' output as (metrics, params, tags): the evaluation's `BOOKKEEPING`
    values become params (a count without a decimal point: it is one) and its seconds a tag."""
    metrics: dict[str, Any] = {}
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    for key, value in logged.items():
        if key.startswith(EVAL_PREFIX) and key.rpartition("/")[2] in BOOKKEEPING:
            number = float(value)
            params[key] = str(int(number)) if number.is_integer() and key.rpartition("/")[2] != "epsilon" else str(value)
        elif key == EVAL_SECONDS:
            tags[EVAL_SECONDS_TAG] = f"{float(value):.2f}"
        else:
            metrics[key] = value
    return metrics, params, tags


_LAYER_OR_CLASS = re.compile(r"^(?:.+/)?(accuracy_class_)\d+$")


def catalogue_name(logged: str) -> str:
    """The entry of `METRICS` or `RECORDED` that the MLflow metric `logged` is: its prefix
    (epoch/, test/, eval/) and an evaluation layer (eval/<layer>/<name>) left out, a class
    number written {k}."""
    name = logged
    for prefix in (EPOCH_PREFIX, TEST_PREFIX, EVAL_PREFIX):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = _LAYER_OR_CLASS.sub(r"\1{k}", name)
    return name.rpartition("/")[2]


def mlflow_name(name: str, objectives: tuple[str, ...] | list[str] = ()) -> str | None:
    """The MLflow metric name of final metric `name` (None: not logged, see DROPPED and
    FINAL_FROM_LAST_EPOCH); an objective keeps its bare name."""
    if name in objectives or name in BARE:
        return name
    if name in DROPPED or name in FINAL_FROM_LAST_EPOCH:
        return None
    if name in TEST_SET:
        return TEST_PREFIX + name
    return EVAL_PREFIX + name


def bare_name(logged: str) -> str:
    """The inverse of `mlflow_name` (epoch/ names are left alone)."""
    for prefix in (TEST_PREFIX, EVAL_PREFIX):
        if logged.startswith(prefix):
            return logged[len(prefix):]
    return logged


def mlflow_metrics(
    metrics: dict[str, Any], config: dict[str, Any], objectives: tuple[str, ...] | list[str] = (), final: bool = True
) -> dict[str, Any]:
    """A trial's final `metrics` (bare names) under the names they are logged with in MLflow
    (`mlflow_name`; those it gives None are not logged), the evaluation's epsilon only where it
    differs from the param of `config`. A trial without a final result (stopped, failed:
    `final` False) has only its last epoch's values: the bare ones (val_acc, the objectives)
    are logged, the rest are its epoch/ series (not test/, eval/ values)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = mlflow_name(key, objectives)
        if not final and name != key:
            continue
        if key == "epsilon" and value == config.get("epsilon"):
            continue
        if name is not None:
            out[name] = value
    return out
