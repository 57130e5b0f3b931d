"""Backbones by name (timm-style registry) and which of their layers are regularised.

Every regularisable stage ends in BatchNorm → ReLU, so its module output is a post-ReLU map
(B, C, H, W) that the focus/coupling hooks read; docs/design.md §4: without BN before the ReLU, focus
regularisation kills every map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError
from syncmodel.focus import FORWARD_MASKS, attach_forward_masks
from syncmodel.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[TrainConfig, int, int, int], nn.Module]  # (config, in_ch, classes, size)
    stages: tuple[str, ...]  # regularisable stages, input to output
    default: tuple[str, ...]  # regularised when config.layers is None: the last conv stage


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def _n_pools(image_size: int, max_pools: int, min_side: int) -> int:
    """How many 2x poolings fit before the map would drop below `min_side` pixels."""
    n, side = 0, image_size
    while n < max_pools and side // 2 >= min_side:
        n, side = n + 1, side // 2
    return n


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # bias is redundant before BN
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _init_weights(model: nn.Module) -> None:
    # torchvision's ResNet/VGG init, so all backbones start alike under torch.manual_seed
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class SimpleCNN(nn.Module):
    """Three Conv-BN-ReLU stages (width, 2w, 2w), global average pool, linear head.

    Pools between stages at most twice but never below 7 pixels, so the regularised `block3`
    map keeps spatial extent: 16 → 8×8 (one pool), 28 → 7×7, 32 → 8×8, 8 → 8×8 (no pool).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 32):
        super().__init__()
        n_pools = _n_pools(image_size, max_pools=2, min_side=7)
        # the single pool of small inputs goes first, so block2 and block3 share the map size
        pool = [nn.MaxPool2d(2) if i < n_pools else nn.Identity() for i in range(2)]
        self.block1 = nn.Sequential(*_conv_bn_relu(in_channels, width))
        self.pool1 = pool[0]
        self.block2 = nn.Sequential(*_conv_bn_relu(width, 2 * width))
        self.pool2 = pool[1]
        self.block3 = nn.Sequential(*_conv_bn_relu(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.block1(x))  # (B, w, H/2, W/2)
        x = self.pool2(self.block2(x))  # (B, 2w, H/4, W/4) or unpooled for small inputs
        x = self.block3(x)  # (B, 2w, h, w): the regularised map
        return self.fc(x.mean(dim=(2, 3)))  # (B, classes)


class VGG11BN(nn.Module):
    """CIFAR-sized VGG-11 with BN: stages of 1, 1, 2, 2, 2 convs, widths w·(1, 2, 4, 8, 8).

    `width` 64 is the standard VGG-11 (64…512). Pools between stages while the map stays
    >= 4 pixels, so a 32×32 input gives stage4/stage5 maps of 4×4 (not the usual 2×2, where
    "focus" would mean little); global average pool + linear head replace the 3-layer MLP.
    """

    _CONVS = (1, 1, 2, 2, 2)
    _MULT = (1, 2, 4, 8, 8)

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 64):
        super().__init__()
        n_pools = _n_pools(image_size, max_pools=4, min_side=4)
        c_in = in_channels
        for i, (n_conv, mult) in enumerate(zip(self._CONVS, self._MULT)):
            layers: list[nn.Module] = []
            for _ in range(n_conv):
                layers += _conv_bn_relu(c_in, width * mult)
                c_in = width * mult
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            if i < 4:
                self.add_module(f"pool{i + 1}", nn.MaxPool2d(2) if i < n_pools else nn.Identity())
        self.fc = nn.Linear(c_in, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = getattr(self, f"pool{i}")(getattr(self, f"stage{i}")(x))
        x = self.stage5(x)  # (B, 8w, h, w): the regularised map
        return self.fc(x.mean(dim=(2, 3)))  # (B, classes)


def backbone(name: str, stages: tuple[str, ...]) -> Callable:
    """Register a builder `fn(config, in_channels, num_classes, image_size)` under `name`;
    `stages` are its regularisable layers, input to output, the last one the default."""

    def deco(fn: Callable[[TrainConfig, int, int, int], nn.Module]) -> Callable:
        BACKBONES.register(name)(BackboneSpec(fn, stages, stages[-1:]))
        return fn

    return deco


@backbone("simple_cnn", ("block1", "block2", "block3"))
def _simple_cnn(
    config: TrainConfig, in_channels: int, num_classes: int, image_size: int
) -> nn.Module:
    return SimpleCNN(in_channels, num_classes, image_size, width=config.width)


@backbone("vgg11_bn", tuple(f"stage{i}" for i in range(1, 6)))
def _vgg11_bn(
    config: TrainConfig, in_channels: int, num_classes: int, image_size: int
) -> nn.Module:
    return VGG11BN(in_channels, num_classes, image_size, width=config.width)


@backbone("resnet18", ("layer1", "layer2", "layer3", "layer4"))
def _resnet18(
    config: TrainConfig, in_channels: int, num_classes: int, image_size: int
) -> nn.Module:
    """torchvision ResNet-18; `cifar_stem` swaps the 7×7/2 stem + max-pool for a 3×3/1 conv.

    `layer4` (BasicBlocks, output post-ReLU) maps: 32 → 4×4 with the CIFAR stem, 224 → 7×7
    with the ImageNet stem. `config.width` is ignored.
    """
    import torchvision  # here: its import costs a second (torch._dynamo) that simple_cnn never needs

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if config.cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def build_model(
    config: TrainConfig, in_channels: int, num_classes: int, image_size: int
) -> nn.Module:
    """The backbone named by `config.backbone`, freshly initialised (seed with torch.manual_seed).

    Raises `ConfigError` on an unknown backbone, or when `config.layers` names a module the
    model lacks (any submodule name is accepted, e.g. "layer4.1"; pick a post-ReLU one).
    """
    spec = BACKBONES.get(config.backbone, field="backbone")
    model = spec.build(config, in_channels, num_classes, image_size)
    model.regularisable_layers = spec.stages  # read back by conv_layers()
    names = dict(model.named_modules())
    for i, layer in enumerate(config.layers or []):
        if layer not in names:
            raise ConfigError(
                f"layers[{i}]",
                f"{config.backbone} has no layer {layer!r}; regularisable: {', '.join(spec.stages)}",
            )
    if config.lambda_focus > 0 and config.focus_kind in FORWARD_MASKS:
        # Kinds whose mask is part of the forward pass (syncmodel.focus): the next layer sees
        # the masked map in training and evaluation alike.
        attach_forward_masks(
            model, list(config.layers or spec.default), config.focus_kind,
            beta_rate=config.focus_icnn_beta_rate, sigma=config.focus_gate_sigma,
            focus=config.focus_position,
        )  # fmt: skip
    return model


def default_layers(backbone: str) -> list[str]:
    """Layers regularised when `config.layers` is None: the last conv stage."""
    return list(BACKBONES.get(backbone, field="backbone").default)


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's regularisable stages (post-ReLU outputs), input to output."""
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    stages = getattr(model, "regularisable_layers", None)
    if stages is not None:
        return list(stages)
    # a model not built here: its top-level children that hold a convolution
    return [
        name
        for name, child in model.named_children()
        if any(isinstance(m, nn.Conv2d) for m in child.modules())
    ]
