"""MobileNetV2: widths, param counts, torchvision parity (eval and train-mode BN), init, registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures.mobilenet_v2 import TORCH_STAGES, make_divisible
from hotspot_jax.errors import ConfigError
from parity_utils import (
    IMPLS,
    assert_eval_parity,
    assert_param_count,
    assert_train_parity,
    flax_param_count,
    require_torch,
    torch_model_for,
)

# torchvision MobileNetV2(width_mult=w) parameter counts, 1000 classes (1.0: the published 3,504,872)
WIDTH_PARAMS = {0.35: 1_677_128, 0.5: 1_968_680, 0.75: 2_636_424, 1.0: 3_504_872, 1.4: 6_108_776}


def test_make_divisible_matches_torchvision_rounding():
    # hand-worked: round to nearest multiple of 8, never below 8, never more than 10% down
    assert [make_divisible(v) for v in (32, 11.2, 16 * 0.35, 24 * 0.35, 1280 * 1.4, 96 * 0.75, 4)] == [
        32, 16, 8, 8, 1792, 72, 8]
    assert make_divisible(27, 8) == 32  # round(27/8)*8 = 24 is >10% below 27 -> 32
    assert make_divisible(100, 1) == 100
    assert make_divisible(13.4, 4) == 16  # nearest 12 is 10.4% below 13.4 -> 16


@pytest.mark.needs_torch
def test_make_divisible_equals_torchvision_on_a_grid():
    require_torch()
    from torchvision.models._utils import _make_divisible

    for divisor in (1, 4, 8, 16):
        for value in np.arange(0.5, 400, 0.37):
            ours, theirs = make_divisible(float(value), divisor), _make_divisible(float(value), divisor)
            assert ours == theirs, (value, divisor)


def test_param_count_matches_published():
    assert architectures.get("mobilenet_v2").num_params == 3_504_872
    assert assert_param_count("mobilenet_v2", 3_504_872) == 3_504_872


@pytest.mark.parametrize("width", sorted(WIDTH_PARAMS))
def test_param_count_per_width(width):
    assert flax_param_count("mobilenet_v2", width_mult=width) == WIDTH_PARAMS[width]


@pytest.mark.needs_torch
def test_width_param_counts_match_torchvision_models():
    require_torch()
    import torchvision

    for width, expected in WIDTH_PARAMS.items():
        model = torchvision.models.mobilenet_v2(width_mult=width)
        assert sum(p.numel() for p in model.parameters()) == expected, width


def test_registry_entries():
    for name in ("mobilenet", "mobilenetv2", "mobilenet_v2"):
        assert architectures.get(name).name == "mobilenet_v2"
    spec = architectures.get("mobilenet_v2")
    assert (spec.input_size, spec.min_input_size, spec.classifier, spec.first_conv) == (
        224, 1, ("classifier_1",), "features_0_0")
    v1 = architectures.weight_spec("mobilenet_v2.tv_in1k")
    assert (v1.file_name, v1.acc1, v1.resize, v1.torchvision_enum) == (
        "mobilenet_v2-b0353104.pth", 71.878, 256, "MobileNet_V2_Weights.IMAGENET1K_V1")
    v2 = architectures.weight_spec("mobilenet_v2.tv2_in1k")
    assert (v2.file_name, v2.acc1, v2.resize, v2.crop) == ("mobilenet_v2-7ebf99e0.pth", 72.154, 232, 224)


def _picked_init(model, x, pick):
    """Real random init, jitted and returning only ``pick(params)``, so XLA prunes everything else."""
    return jax.jit(lambda key: pick(model.init(key, x, train=False)["params"]))(jax.random.PRNGKey(0))


def _filled_variables(model, x, seed=0, fill_value=None):
    """Variables of ``model`` filled from numpy (no per-shape jax.random compiles): fan-in scaled kernels,
    non-trivial BN statistics; or every leaf ``fill_value`` (BN var 1) when given."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if fill_value is not None:
            return np.full(leaf.shape, 1.0 if name == "var" else fill_value, np.float32)
        if name == "kernel":
            return rng.standard_normal(leaf.shape).astype(np.float32) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0, 0.2, leaf.shape).astype(np.float32)

    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_structure_and_stage_shapes_at_dataset_size():
    model = architectures.create("mobilenet_v2", num_classes=12)
    x = jnp.zeros((2, 40, 24, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    params = variables["params"]
    # expansion 1: depthwise conv_0, project conv_1 + BN conv_2; otherwise expand/depthwise/project/BN
    assert sorted(params["features_1"]) == ["conv_0_0", "conv_0_1", "conv_1", "conv_2"]
    expected = ["conv_0_0", "conv_0_1", "conv_1_0", "conv_1_1", "conv_2", "conv_3"]
    assert sorted(params["features_2"]) == expected
    assert params["features_2"]["conv_1_0"]["kernel"].shape == (3, 3, 1, 96)  # depthwise, 16 * 6 channels
    assert params["features_18_0"]["kernel"].shape == (1, 1, 320, 1280)
    assert "features_19" not in params and "features_0_0" in params
    apply = lambda v: model.apply(v, x, train=False, mutable=["intermediates"])  # noqa: E731
    logits, state = jax.eval_shape(apply, variables)
    assert logits.shape == (2, 12) and logits.dtype == jnp.float32
    inter = {k: v[0].shape for k, v in state["intermediates"].items()}
    assert sorted(inter) == sorted(TORCH_STAGES)
    assert inter["stem"] == (2, 20, 12, 32) and inter["block1"] == (2, 20, 12, 16)
    assert inter["block3"] == (2, 10, 6, 24) and inter["block17"] == (2, 2, 1, 320)
    assert inter["last_conv"] == (2, 2, 1, 1280) and inter["pooled"] == (2, 1280)


def test_torchvision_init():
    model = architectures.create("mobilenet_v2", num_classes=12)
    k, dw, head, bn = _picked_init(model, jnp.zeros((1, 32, 32, 3)), lambda p: (
        p["features_18_0"]["kernel"], p["features_14"]["conv_1_0"]["kernel"], p["classifier_1"],
        p["features_5"]["conv_3"]))
    # kaiming normal (fan_out) convs, N(0, 0.01) Linear, BN 1/0, zero bias
    assert abs(float(jnp.std(k)) / np.sqrt(2 / 1280) - 1) < 0.02 and abs(float(jnp.mean(k))) < 1e-3
    assert dw.shape == (3, 3, 1, 576)  # torch's fan_out for a depthwise (576, 1, 3, 3) weight: 576 * 9
    assert abs(float(jnp.std(dw)) / np.sqrt(2 / (576 * 9)) - 1) < 0.05
    assert abs(float(jnp.std(head["kernel"])) / 0.01 - 1) < 0.05 and float(jnp.abs(head["bias"]).max()) == 0.0
    assert float(jnp.abs(bn["scale"] - 1).max()) == 0.0 and float(jnp.abs(bn["bias"]).max()) == 0.0


def test_residual_only_when_shapes_match():
    # with every weight zero, a residual block is the identity and a downsampling block outputs 0
    h = jnp.asarray(np.random.default_rng(2).standard_normal((1, 4, 4, 24)), jnp.float32)
    unit = architectures.mobilenet_v2.InvertedResidual(24, 24, 1, 6)
    y = unit.apply(_filled_variables(unit, h, fill_value=0.0), h, train=False)
    np.testing.assert_allclose(y, h, atol=1e-6)
    down = architectures.mobilenet_v2.InvertedResidual(24, 32, 2, 6)
    y = down.apply(_filled_variables(down, h, fill_value=0.0), h, train=False)
    assert y.shape == (1, 2, 2, 32) and float(jnp.abs(y).max()) == 0.0
    wide = architectures.mobilenet_v2.InvertedResidual(24, 32, 1, 6)  # stride 1 but channels change
    y = wide.apply(_filled_variables(wide, h, fill_value=0.0), h, train=False)
    assert y.shape == (1, 4, 4, 32) and float(jnp.abs(y).max()) == 0.0


def test_dropout_is_active_only_in_train_mode():
    # one inverted residual block keeps this fast; the dropout sits in the head either way
    model = architectures.create("mobilenet_v2", num_classes=4, dropout_rate=0.5, width_mult=0.35,
                                 inverted_residual_setting=((1, 16, 1, 1),))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 3)), jnp.float32)
    variables = _filled_variables(model, x)
    evals = [model.apply(variables, x, train=False) for _ in range(2)]
    np.testing.assert_array_equal(evals[0], evals[1])
    def train_apply(m, rngs):
        return m.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)[0]

    outs = [train_apply(model, {"dropout": jax.random.PRNGKey(s)}) for s in (0, 1)]
    assert float(jnp.abs(outs[0] - outs[1]).max()) > 0
    no_dropout = architectures.create("mobilenet_v2", num_classes=4, dropout_rate=0.0, width_mult=0.35,
                                      inverted_residual_setting=((1, 16, 1, 1),))
    plain = [train_apply(no_dropout, None) for _ in range(2)]  # rate 0: no rng needed
    np.testing.assert_array_equal(plain[0], plain[1])


def test_bfloat16_compute_keeps_float32_params_stats_and_logits():
    model = architectures.create("mobilenet_v2", num_classes=3, dtype=jnp.bfloat16)
    x = jnp.ones((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits, state = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"],
                              rngs={"dropout": jax.random.PRNGKey(0)}),
        variables,
    )
    assert logits.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(state["batch_stats"])} == {jnp.dtype(jnp.float32)}
    assert state["intermediates"]["block17"][0].dtype == jnp.bfloat16  # the compute really is bfloat16


def test_bad_input_is_a_clear_error():
    model = architectures.create("mobilenet_v2", num_classes=3)
    with pytest.raises(ConfigError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32)), train=False)
    with pytest.raises(ConfigError, match="at least 1x1"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 0, 3)), train=False)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_eval_parity_224_and_dataset_size(impl):
    model = torch_model_for("mobilenet_v2")
    assert_eval_parity("mobilenet_v2", model, TORCH_STAGES, sizes=[(224, 224), (40, 24)], impl=impl)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_eval_parity_other_width_tiny_input(impl):
    model = torch_model_for("mobilenet_v2", seed=3, num_classes=12, width_mult=0.75)
    assert_eval_parity(
        "mobilenet_v2", model, TORCH_STAGES, sizes=[(1, 1), (57, 33)], batch=3, width_mult=0.75, impl=impl
    )


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_train_parity(impl):
    assert_train_parity(
        "mobilenet_v2", torch_model_for("mobilenet_v2", seed=1), size=(40, 24), batch=8, dropout_rate=0.0,
        impl=impl,
    )


def test_relu6_gradient_is_torchs_at_the_boundaries():
    """ReLU6's gradient is 1 strictly inside (0, 6) and 0 at exactly 0 and 6, as torch's hardtanh backward."""
    torch = pytest.importorskip("torch")
    from architectures.mobilenet_v2 import _relu6

    values = [-1.0, 0.0, 1e-7, 3.0, 6.0 - 1e-6, 6.0, 7.0]
    t = torch.tensor(values, requires_grad=True)
    torch.nn.functional.relu6(t).sum().backward()
    for impl in ("reference", "cpu"):  # both implementations' forms
        ours = jax.vmap(jax.grad(lambda v: _relu6(v, impl)))(jnp.asarray(values))
        np.testing.assert_array_equal(np.asarray(ours), t.grad.numpy(), err_msg=impl)
