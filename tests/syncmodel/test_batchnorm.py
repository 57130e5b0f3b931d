"""BatchNorm statistics: recomputed before evaluation and checkpoint; no short last batch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from syncmodel.checkpoint import load_checkpoint
from syncmodel.config import TrainConfig
from syncmodel.data import Split, load_data
from syncmodel.nets import build_model
from syncmodel.training import _Batches, bn_sample, recompute_bn_stats, train

FAST = dict(dataset="digits", n_train=300, epochs=2, width=8, batch_size=64, device="cpu")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_data(TrainConfig(**FAST))


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_checkpoint_bn_stats_match_a_recomputation_over_the_training_split(digits, tmp_path):
    result = train(TrainConfig(**FAST), data=digits, out_dir=tmp_path)
    model, _, _ = load_checkpoint(result.checkpoint)
    saved = _bn_stats(model)
    # reference: torch's own update_bn over the whole training split in one batch
    update_bn([digits.train.images], model)
    ref = _bn_stats(model)
    for key in ref:
        if key.endswith("running_mean"):
            std = ref[key.replace("mean", "var")].sqrt()
            # shift in units of the channel's std; running averages (momentum 0.1) are ~0.1-0.2 off
            assert float(((saved[key] - ref[key]).abs() / std).max()) < 0.02, key
        else:
            assert torch.allclose(saved[key], ref[key], rtol=0.05), key


def test_recompute_of_a_bn_input_layer_gives_the_images_mean_and_unbiased_variance():
    images = torch.randn(200, 3, 5, 5) * torch.tensor([1.0, 2.0, 0.5])[:, None, None] + torch.tensor([0.0, 3.0, -1.0])[:, None, None]
    model = nn.Sequential(nn.BatchNorm2d(3))
    recompute_bn_stats(model, images, CPU)  # 200 images: one batch
    bn = model[0]
    assert torch.allclose(bn.running_mean, images.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, images.var((0, 2, 3), unbiased=True), rtol=1e-5)


@pytest.mark.parametrize("backbone", ["simple_cnn", "resnet18", "vgg11_bn"])
def test_recompute_equals_torch_update_bn_on_every_backbone(backbone):
    torch.manual_seed(0)
    cfg = TrainConfig(backbone=backbone, width=4, device="cpu")
    model = build_model(cfg, 1, 10, 16)
    images = torch.randn(300, 1, 16, 16)
    ours, ref = copy.deepcopy(model), copy.deepcopy(model)
    recompute_bn_stats(ours, images, CPU, batch_size=256)  # 300 images → two batches of 150
    update_bn([images[:150], images[150:]], ref)
    a, b = _bn_stats(ours), _bn_stats(ref)
    assert a.keys() == b.keys() and a
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_recompute_restores_each_modules_mode_and_momentum():
    cfg = TrainConfig(backbone="simple_cnn", width=4, device="cpu")
    model = build_model(cfg, 1, 10, 16)
    model.eval()
    model.block2.train()  # a mixed state must come back as it was
    model.block1[1].momentum = 0.3
    before = {name: m.training for name, m in model.named_modules()}
    recompute_bn_stats(model, torch.randn(40, 1, 16, 16), CPU)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.block1[1].momentum == 0.3 and model.block3[1].momentum == 0.1


def test_recompute_leaves_the_global_random_stream_alone():
    model = build_model(TrainConfig(width=4, device="cpu"), 1, 10, 16)
    images = torch.randn(600, 1, 16, 16)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    recompute_bn_stats(model, images[bn_sample(len(images), 256, seed=1)], CPU)
    assert torch.equal(torch.rand(3), expected)


def test_epoch_batches_have_no_short_last_batch():
    n, batch_size = 129, 64  # old slicing: 64, 64, 1
    split = Split(torch.arange(n, dtype=torch.float32)[:, None, None, None], torch.zeros(n, dtype=torch.long))
    sizes, seen = [], []
    for x, _ in _Batches(split, batch_size, CPU, seed=0).epoch():
        sizes.append(len(x))
        seen += x.flatten().long().tolist()
    assert len(sizes) == 3 and min(sizes) >= batch_size // 2 and max(sizes) <= batch_size
    assert sorted(seen) == list(range(n))  # every image once per epoch
