"""Backbones: build by name, output shapes, regularised layers post-ReLU with spatial extent.

Small inputs and batches only: these run on a shared 2-core CPU.
"""

from __future__ import annotations

import pytest
import torch

from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError
from syncmodel.nets import BACKBONES, build_model, conv_layers, default_layers

# (backbone, in_channels, image_size, expected side of the default layer's map)
CASES = [
    ("simple_cnn", 1, 16, 8),
    ("simple_cnn", 1, 28, 7),
    ("simple_cnn", 1, 32, 8),
    ("resnet18", 3, 32, 4),
    ("resnet18", 1, 28, 4),
    ("vgg11_bn", 3, 32, 4),
]


def _build(backbone: str, in_channels: int, size: int, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TrainConfig(backbone=backbone, **kw), in_channels, 7, size)


def _default_map(model: torch.nn.Module, backbone: str, x: torch.Tensor) -> torch.Tensor:
    out = {}
    layer = model.get_submodule(default_layers(backbone)[0])
    handle = layer.register_forward_hook(lambda m, i, o: out.update(a=o))
    model(x)
    handle.remove()
    return out["a"]


@pytest.mark.parametrize("backbone,in_channels,size,side", CASES)
def test_output_is_batch_by_classes(backbone, in_channels, size, side):
    model = _build(backbone, in_channels, size)
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("backbone,in_channels,size,side", CASES)
def test_default_layer_is_post_relu_map_with_extent(backbone, in_channels, size, side):
    model = _build(backbone, in_channels, size)
    a = _default_map(model, backbone, torch.randn(2, in_channels, size, size))
    assert a.ndim == 4 and a.shape[0] == 2 and a.shape[2:] == (side, side)
    assert (a >= 0).all()


def test_simple_cnn_last_stage_has_64_neurons_at_default_width():
    a = _default_map(_build("simple_cnn", 1, 16), "simple_cnn", torch.randn(2, 1, 16, 16))
    assert a.shape[1] == 64


def test_unknown_backbone_names_the_field_and_known_ones():
    with pytest.raises(ConfigError) as err:
        build_model(TrainConfig(backbone="resnet9000"), 3, 10, 32)
    assert err.value.field == "backbone"
    assert all(name in str(err.value) for name in BACKBONES.names())


def test_default_layers_of_unknown_backbone_raises():
    with pytest.raises(ConfigError, match="backbone"):
        default_layers("nope")


def test_unknown_layer_names_the_field_and_the_stages():
    with pytest.raises(ConfigError) as err:
        _build("simple_cnn", 1, 16, layers=["block9"])
    assert err.value.field == "layers[0]" and "block3" in str(err.value)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_conv_layers_lists_existing_stages_ending_in_default(backbone):
    model = _build(backbone, 3, 32)
    stages = conv_layers(model)
    assert stages[-1:] == default_layers(backbone)
    assert all(model.get_submodule(name) is not None for name in stages)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_init_is_deterministic_under_manual_seed(backbone):
    a, b = _build(backbone, 3, 32).state_dict(), _build(backbone, 3, 32).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_channels_last_bf16_autocast_forward(backbone):
    model = _build(backbone, 3, 32).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y.float()).all()
