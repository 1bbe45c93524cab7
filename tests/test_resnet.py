"""ResNet: param counts, torchvision parity (eval logits and stages, train-mode BN), registry entries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures.resnet import ResNet
from hotspot_jax.errors import ConfigError
from parity_utils import (
    IMPLS,
    assert_eval_parity,
    assert_param_count,
    assert_train_parity,
    flax_param_count,
    torch_model_for,
)

STAGES = {
    "stem": "maxpool",
    "layer1": "layer1",
    "layer2": "layer2",
    "layer3": "layer3",
    "layer4": "layer4",
    "pooled": "avgpool",
}


@pytest.mark.parametrize("arch, expected", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_param_count_matches_torchvision(arch, expected):
    assert assert_param_count(arch, expected) == expected


def test_param_count_other_depths_match_registry():
    for arch in ("resnet34", "resnet101", "resnet152"):
        assert flax_param_count(arch) == architectures.get(arch).num_params


def test_registry_entries():
    spec = architectures.get("resnet")
    assert spec.name == "resnet50" and spec.input_size == 224 and spec.min_input_size == 1
    assert architectures.weight_spec("resnet50.tv_in1k").file_name == "resnet50-0676ba61.pth"
    v2 = architectures.weight_spec("resnet50.tv2_in1k")
    assert (v2.file_name, v2.acc1, v2.resize) == ("resnet50-11ad3fa6.pth", 80.858, 232)
    assert architectures.weight_spec("resnet18.tv_in1k").acc1 == 69.758


@pytest.mark.parametrize("bottleneck, last_bn", [(False, "bn2"), (True, "bn3")])
def test_zero_init_residual_zeroes_last_bn_scale(bottleneck, last_bn):
    # a one-stage ResNet keeps this fast; the full-depth models share the same code path
    model = ResNet(stage_sizes=(1,), bottleneck=bottleneck, num_classes=3, zero_init_residual=True)
    init = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, 32, 32, 3)), train=False)["params"])
    params = init(jax.random.PRNGKey(0))
    assert float(jnp.abs(params["layer1_0"][last_bn]["scale"]).max()) == 0.0
    assert float(jnp.abs(params["layer1_0"]["bn1"]["scale"] - 1).max()) == 0.0
    # torchvision's init: kaiming normal with fan_out, std sqrt(2 / (out_channels * kh * kw))
    kernel = params["conv1"]["kernel"]  # (7, 7, 3, 64)
    assert abs(float(jnp.std(kernel)) - np.sqrt(2 / (64 * 49))) < 0.05 * np.sqrt(2 / (64 * 49))
    bound = 1 / np.sqrt(params["fc"]["kernel"].shape[0])  # Linear: torch default U(-1/sqrt(fan_in), ...)
    assert float(jnp.abs(params["fc"]["kernel"]).max()) <= bound
    assert float(jnp.abs(params["fc"]["kernel"]).max()) > 0.9 * bound


def test_wrong_rank_input_is_a_clear_error():
    model = architectures.create("resnet18", num_classes=3)
    with pytest.raises(ConfigError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)), train=False)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_resnet50_eval_parity(impl):
    assert_eval_parity("resnet50", torch_model_for("resnet50"), STAGES, sizes=[(224, 224), (96, 128)], impl=impl)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_resnet50_train_parity(impl):
    assert_train_parity("resnet50", torch_model_for("resnet50", seed=1), size=(64, 64), batch=4, impl=impl)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_resnet18_eval_and_train_parity(impl):
    # the "new variant" proof: BasicBlock network through the same helpers, odd non-square size
    assert_eval_parity("resnet18", torch_model_for("resnet18", num_classes=7), STAGES, sizes=[(224, 224), (75, 61)], impl=impl)
    assert_train_parity("resnet18", torch_model_for("resnet18", seed=2, num_classes=7), size=(48, 40), batch=3, impl=impl)
