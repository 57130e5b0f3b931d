"""The training objective: cross-entropy + lambda_focus * focus + coupling_K * sync.

Forward hooks capture the named layers' post-ReLU outputs; `Regularizer.loss` combines the terms.

Strength scale. Both regularisers are O(1): the focus spread lies in [0, 8] (about 0.5-0.8 on
a trained BN net, docs/design.md §4) and the template loss in [0, 2]; the coupling potential is
divided by epsilon^2 (config.epsilon, the initial radius: fixed over training), which
makes each neighbour pair cost about (|v_g - v_c| / epsilon)^2 / 2 in [0, 1/2] (see
`syncmodel.sync`). With that, 0.1 is a moderate strength for both (measured on digits,
docs/results.md): the prototype's raw K = 1 (tight modules, 99%) is 0.25 here at epsilon 0.5,
and its harmful K = 10 is 2.5.
Several layers: each term is the mean over the layers, so strengths do not grow with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError
from syncmodel.focus import (
    CLASS_CONDITIONAL_KINDS,
    FOCUS_KINDS,
    batch_class_means,
    focus_loss,
    map_marginals,
    mask_key,
)
from syncmodel.sync import descriptors, mean_neighbours, sync_loss


def sync_normaliser(epsilon: float) -> float:
    """What the coupling potential is divided by: epsilon^2 (the initial radius).

    A neighbour pair's potential is about |v_g - v_c|^2 / 2 for unit-norm descriptors, so after
    the division a pair at the edge of the ball costs 1/2 whatever epsilon is, and coupling_K
    means the same thing across radii. Measured on digits (docs/results.md): with this scale
    coupling_K = 0.1 is moderate (modules of ~7-9 neurons at 98% accuracy) and 1 is strong.
    We first tried epsilon^2 / 2 (twice as strong): lambda_focus = coupling_K = 0.1 then fell
    to 93.6% accuracy, so 0.1 was no longer moderate.
    """
    return epsilon**2


def _layer_mean(terms: list[Tensor]) -> Tensor:
    """Mean of per-layer scalars; one layer's is itself (exactly what stack().mean() gives,
    without its two graph nodes)."""
    return terms[0] if len(terms) == 1 else torch.stack(terms).mean()


class Regularizer:
    """Hooks `layers` of `model` and builds the loss of docs/design.md §1.1-1.2 from a `TrainConfig`.

    Usage: `with Regularizer(model, cfg, ["layer4"]) as reg: total, parts = reg.loss(model(x),
    y, epoch)`; or call `.remove()` when done. `epoch` counts from 0 (fractions allowed): the
    coupling is off while epoch < warmup_epochs, and epsilon anneals linearly from
    `epsilon` (first coupled epoch) to `epsilon_final` (epoch `epochs - 1`) when that is set.
    A zero strength skips its term entirely: lambda_focus = coupling_K = 0 gives exactly CE.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, layers: Sequence[str] | None = None):
        layers = list(config.layers if layers is None else layers)
        if not layers:
            raise ConfigError("layers", "name at least one layer to regularise (nets resolve the default)")
        self.config = config
        self.layers = layers
        self.focus_fn = FOCUS_KINDS.get(config.focus_kind, field="focus_kind")
        named = dict(model.named_modules())
        unknown = [name for name in layers if name not in named or name == ""]
        if unknown:
            # Blocks (non-leaf modules) are what one normally hooks; leaves are accepted too.
            blocks = [n for n, m in named.items() if n and any(True for _ in m.children())]
            raise ConfigError(
                "layers",
                f"unknown layer(s) {', '.join(map(repr, unknown))}; "
                f"blocks of this model: {', '.join(blocks or [n for n in named if n])}",
            )
        self.modules = {name: named[name] for name in layers}
        self.convs: dict[str, nn.Conv2d] = {}
        if config.descriptor == "weight" and config.coupling_K > 0:
            for name, module in self.modules.items():
                convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
                if not convs:
                    raise ConfigError("descriptor", f"'weight' needs a Conv2d inside layer {name!r}")
                self.convs[name] = convs[-1]
        self.activations: dict[str, Tensor] = {}
        # forward masks of the `icnn` / `gate` kinds, attached by build_model (none otherwise)
        masks = getattr(getattr(model, "_orig_mod", model), "focus_masks", None)
        self.masks: dict[str, nn.Module] = dict(masks.items()) if masks is not None else {}
        # class_spread: per layer, a running mean of class-mean responses (K, C) and which
        # classes it has seen (K,). Not checkpointed: it restarts on resume (refills in ~10 steps).
        self.class_means: dict[str, tuple[Tensor, Tensor]] = {}
        self._handles = [
            module.register_forward_hook(self._capture(name)) for name, module in self.modules.items()
        ]

    def _capture(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, Tensor) or output.dim() != 4:
                raise ConfigError("layers", f"layer {name!r} must output a (B, C, H, W) tensor")
            self.activations[name] = output

        return hook

    def epsilon_at(self, epoch: float) -> float:
        """The neighbourhood radius at `epoch` (0-based): linear from epsilon to epsilon_final."""
        cfg = self.config
        if cfg.epsilon_final is None:
            return cfg.epsilon
        span = max(cfg.epochs - 1 - cfg.warmup_epochs, 1)
        t = min(max((epoch - cfg.warmup_epochs) / span, 0.0), 1.0)
        return cfg.epsilon + (cfg.epsilon_final - cfg.epsilon) * t

    def coupling_active(self, epoch: float) -> bool:
        return self.config.coupling_K > 0 and epoch >= self.config.warmup_epochs

    def _acts(self, name: str) -> Tensor:
        if name not in self.activations:
            raise RuntimeError(f"no output captured from layer {name!r}: run the model's forward first")
        return self.activations[name]

    def loss(self, logits: Tensor, targets: Tensor, epoch: float) -> tuple[Tensor, dict[str, Tensor]]:
        """(total, parts): total = CE + lambda_focus*focus + coupling_K*sync on the last forward.

        `parts` holds detached 0-d tensors "ce", "focus", "sync" (0.0 for a term that is off),
        left on the device so that logging them costs no synchronisation until read.
        """
        cfg = self.config
        ce = F.cross_entropy(logits, targets)
        total = ce
        zero = torch.zeros((), device=ce.device)
        parts = {"ce": ce.detach().float(), "focus": zero, "sync": zero}
        coupled = self.coupling_active(epoch)
        marginals = self._shared_marginals(coupled)
        if cfg.lambda_focus > 0:
            focus = _layer_mean(
                [
                    focus_loss(
                        self._acts(n), cfg.focus_kind, cfg.focus_position,
                        **self._focus_opts(n, logits, targets, epoch),
                        **({"marginals": marginals[n]} if n in marginals else {}),
                    )  # fmt: skip
                    for n in self.layers
                ]
            )
            total = total + cfg.lambda_focus * focus
            parts["focus"] = focus.detach()
        if coupled:
            eps = self.epsilon_at(epoch)
            terms = []
            for name in self.layers:
                acts = None if cfg.descriptor == "weight" else self._acts(name)
                weight = self.convs[name].weight if cfg.descriptor == "weight" else None
                means = None
                if name in marginals:  # the maps' mass / (H*W): their spatial means
                    h, w = acts.shape[-2:]
                    means = marginals[name][..., -1] / (h * w)
                terms.append(sync_loss(acts, eps, cfg.descriptor, cfg.k, weight, means=means))
            sync = _layer_mean(terms) / sync_normaliser(cfg.epsilon)
            total = total + cfg.coupling_K * sync
            parts["sync"] = sync.detach()
        return total, parts

    def _shared_marginals(self, coupled: bool) -> dict[str, Tensor]:
        """Per layer, the maps' marginals (`focus.map_marginals`) when both terms read them:
        the `spread` focus kind and the coupling's response descriptors (spatial means =
        mass / (H*W)). Computed once, they cost one pass over the maps forward and one
        gradient backward instead of two; the same function to float rounding (the
        reference test holds it to 1e-9 in float64)."""
        cfg = self.config
        if not (coupled and cfg.lambda_focus > 0 and cfg.focus_kind == "spread" and cfg.descriptor == "response"):
            return {}
        out = {}
        for name in self.layers:
            acts = self._acts(name)
            with torch.autocast(acts.device.type, enabled=False):
                out[name] = map_marginals(acts)
        return out

    def _focus_opts(self, name: str, logits: Tensor, targets: Tensor, epoch: float) -> dict[str, object]:
        """Extra inputs of the kinds: min_mass; targets and each filter's class for
        class-conditional kinds; the forward mask module for kinds that have one."""
        cfg = self.config
        opts: dict[str, object] = {"min_mass": cfg.focus_min_mass}
        mask = self.masks.get(mask_key(name))
        if mask is not None:
            opts["mask_module"] = mask
        if cfg.focus_kind == "outside":
            opts["radius"] = cfg.focus_radius
        if cfg.focus_kind not in CLASS_CONDITIONAL_KINDS:
            return opts
        if cfg.focus_kind == "icnn":
            if mask is None or mask.last is None:
                raise ConfigError("focus_kind", f"icnn needs its forward mask on layer {name!r} (build_model attaches it)")
            x = mask.last[0]
            return {
                **opts,
                "targets": targets,
                "filter_class": self.filter_classes(name, targets, logits.shape[1], x, "max"),
                "num_classes": logits.shape[1],
                "epoch": epoch,
                "decay": cfg.focus_icnn_decay,
            }
        return {
            **opts,
            "targets": targets,
            "filter_class": self.filter_classes(name, targets, logits.shape[1]),
            "offclass": cfg.focus_offclass,
        }

    def filter_classes(
        self, name: str, targets: Tensor, num_classes: int, acts: Tensor | None = None, statistic: str = "mean"
    ) -> Tensor:
        """Update layer `name`'s running class means with the last batch; each filter's class (C,).

        A filter's class is the argmax over classes of an exponential moving average (momentum
        `focus_class_momentum`) of its class-mean responses (spatial `statistic` of `acts`,
        default the captured output); detached. A class's first batch sets its row directly.
        """
        acts = self._acts(name) if acts is None else acts
        batch, counts = batch_class_means(acts, targets, num_classes, statistic)  # (K, C), (K,)
        present = counts > 0
        if name not in self.class_means:
            self.class_means[name] = (torch.zeros_like(batch), torch.zeros_like(present))
        ema, seen = self.class_means[name]
        m = self.config.focus_class_momentum
        update = torch.where(seen.unsqueeze(-1), m * ema + (1 - m) * batch, batch)
        ema = torch.where(present.unsqueeze(-1), update, ema)
        self.class_means[name] = (ema, seen | present)
        return ema.argmax(0)

    def reset_class_means(self) -> None:
        """Forget the running class means of `class_spread` (e.g. between runs sharing one)."""
        self.class_means.clear()

    def mean_neighbours(self, epoch: float = 0.0) -> dict[str, float]:
        """Neighbours within epsilon per neuron, per layer, on the last captured batch (a diagnostic)."""
        eps = self.epsilon_at(epoch)
        out = {}
        for name in self.layers:
            if self.config.descriptor == "weight" and name in self.convs:
                desc = descriptors(None, "weight", self.convs[name].weight)
            else:
                desc = descriptors(self._acts(name).detach(), "response")
            out[name] = mean_neighbours(desc, eps)
        return out

    def remove(self) -> None:
        """Detach the hooks and drop captured outputs; idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.activations.clear()

    def __enter__(self) -> Regularizer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
