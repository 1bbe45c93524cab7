"""ShuffleNetV2: param counts, torchvision parity (eval logits and stages, train-mode BN), init, registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures.shufflenet_v2 import TORCH_STAGES
from hotspot_jax.errors import ConfigError
from parity_utils import (
    IMPLS,
    assert_eval_parity,
    assert_param_count,
    assert_train_parity,
    require_torch,
    torch_model_for,
)

# torchvision's published counts (ShuffleNet_V2_*_Weights.meta["num_params"]), 1000 classes
PUBLISHED = {
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_param_count_matches_published(arch):
    assert architectures.get(arch).num_params == PUBLISHED[arch]
    assert assert_param_count(arch, PUBLISHED[arch]) == PUBLISHED[arch]


@pytest.mark.needs_torch
def test_param_count_matches_torchvision_models():
    require_torch()
    import torchvision

    for arch, published in PUBLISHED.items():
        torch_count = sum(p.numel() for p in getattr(torchvision.models, arch)().parameters())
        assert torch_count == published, arch


def test_registry_entries():
    spec = architectures.get("shufflenet")
    assert spec.name == "shufflenet_v2_x1_0"
    assert (spec.input_size, spec.min_input_size) == (224, 1)
    assert (spec.classifier, spec.first_conv) == (("fc",), "conv1_0")
    w = architectures.weight_spec("shufflenet_v2_x1_0.tv_in1k")
    assert (w.file_name, w.acc1, w.resize, w.crop) == ("shufflenetv2_x1-5666bf0f80.pth", 69.362, 256, 224)
    assert w.torchvision_enum == "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1"
    w = architectures.weight_spec("shufflenet_v2_x0_5.tv_in1k")
    assert (w.file_name, w.acc1, w.resize) == ("shufflenetv2_x0.5-f707e7126e.pth", 60.552, 256)
    w = architectures.weight_spec("shufflenet_v2_x1_5.tv_in1k")
    assert (w.file_name, w.acc1, w.resize) == ("shufflenetv2_x1_5-3c479a10.pth", 72.996, 232)
    w = architectures.weight_spec("shufflenet_v2_x2_0.tv_in1k")
    assert (w.file_name, w.acc1, w.resize) == ("shufflenetv2_x2_0-8be3c8ee.pth", 76.230, 232)


def _picked_init(model, x, pick):
    """Real random init, jitted and returning only ``pick(params)``, so XLA prunes everything else."""
    return jax.jit(lambda key: pick(model.init(key, x, train=False)["params"]))(jax.random.PRNGKey(0))


def _filled_variables(model, x, seed=0):
    """Variables of ``model`` filled from numpy (no per-shape jax.random compiles): fan-in scaled kernels,
    non-trivial BN statistics."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.standard_normal(leaf.shape).astype(np.float32) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0, 0.2, leaf.shape).astype(np.float32)

    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_torch_default_init():
    model = architectures.create("shufflenet_v2_x0_5", num_classes=5)
    picked = _picked_init(model, jnp.zeros((1, 32, 32, 3)), lambda p: (
        p["stage3_0"]["branch2_0"]["kernel"], p["stage3_0"]["branch1_0"]["kernel"], p["fc"], p["conv5_1"]))
    k, dw, fc, bn = picked
    # torch's default kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in * kh * kw
    bound = 1 / np.sqrt(48)
    assert k.shape == (1, 1, 48, 48)
    assert float(jnp.abs(k).max()) <= bound and float(jnp.abs(k).max()) > 0.95 * bound
    assert abs(float(jnp.std(k)) - bound / np.sqrt(3)) < 0.05 * bound
    assert dw.shape == (3, 3, 1, 48) and 0.9 / 3 < float(jnp.abs(dw).max()) <= 1 / 3  # depthwise fan_in 9
    assert float(jnp.abs(fc["kernel"]).max()) <= 1 / np.sqrt(1024)
    assert float(jnp.abs(fc["bias"]).max()) <= 1 / np.sqrt(1024) and float(jnp.abs(fc["bias"]).min()) > 0
    assert float(jnp.abs(bn["scale"] - 1).max()) == 0.0 and float(jnp.abs(bn["bias"]).max()) == 0.0


def test_structure_and_stage_shapes_at_dataset_size():
    model = architectures.create("shufflenet_v2_x0_5", num_classes=5)
    x = jnp.zeros((2, 40, 24, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    params = variables["params"]
    assert sorted(params["stage2_0"]) == ["branch1_0", "branch1_1", "branch1_2", "branch1_3", "branch2_0",
                                          "branch2_1", "branch2_3", "branch2_4", "branch2_5", "branch2_6"]
    assert sorted(params["stage2_1"]) == ["branch2_0", "branch2_1", "branch2_3", "branch2_4", "branch2_5",
                                          "branch2_6"]  # stride-1 units have no left branch
    assert params["stage2_1"]["branch2_0"]["kernel"].shape == (1, 1, 24, 24)  # on the split-off half
    apply = lambda v: model.apply(v, x, train=False, mutable=["intermediates"])  # noqa: E731
    logits, state = jax.eval_shape(apply, variables)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    shapes = {k: v[0].shape for k, v in state["intermediates"].items()}
    assert shapes == {
        "conv1": (2, 20, 12, 24), "maxpool": (2, 10, 6, 24), "stage2": (2, 5, 3, 48), "stage3": (2, 3, 2, 96),
        "stage4": (2, 2, 1, 192), "conv5": (2, 2, 1, 1024), "pooled": (2, 1024),
    }


def test_channel_split_passes_first_half_through():
    # stride-1 unit: after the shuffle, even output channels are the untouched first input half
    unit = architectures.shufflenet_v2.InvertedResidual(8, 8, 1)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 5, 8)), jnp.float32)
    y = unit.apply(_filled_variables(unit, x), x, train=False)
    np.testing.assert_array_equal(np.asarray(y[..., 0::2]), np.asarray(x[..., :4]))
    assert float(jnp.abs(y[..., 1::2] - x[..., 4:]).max()) > 0.1


def test_bfloat16_compute_keeps_float32_params_stats_and_logits():
    model = architectures.create("shufflenet_v2_x0_5", num_classes=3, dtype=jnp.bfloat16)
    x = jnp.ones((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"]),
                         variables)
    logits, state = out
    assert logits.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(state["batch_stats"])} == {jnp.dtype(jnp.float32)}
    assert state["intermediates"]["stage4"][0].dtype == jnp.bfloat16  # the compute really is bfloat16


def test_bad_input_is_a_clear_error():
    model = architectures.create("shufflenet_v2_x0_5", num_classes=3)
    with pytest.raises(ConfigError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)), train=False)
    with pytest.raises(ConfigError, match="at least 1x1"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 0, 8, 3)), train=False)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_x1_0_eval_parity_224_and_dataset_size(impl):
    # x1_0 is the study's ShuffleNet; 40x24 is the dataset's native (height, width)
    assert_eval_parity(
        "shufflenet_v2_x1_0", torch_model_for("shufflenet_v2_x1_0"), TORCH_STAGES,
        sizes=[(224, 224), (40, 24)], impl=impl,
    )


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_x0_5_eval_parity_tiny_input_and_new_head(impl):
    # 1x1 is torchvision's min_size; 12 classes as in the dataset
    model = torch_model_for("shufflenet_v2_x0_5", seed=3, num_classes=12)
    assert_eval_parity("shufflenet_v2_x0_5", model, TORCH_STAGES, sizes=[(1, 1), (57, 33)], batch=3, impl=impl)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_train_parity(impl):
    model = torch_model_for("shufflenet_v2_x1_0", seed=1)
    assert_train_parity("shufflenet_v2_x1_0", model, size=(64, 48), batch=4, impl=impl)
