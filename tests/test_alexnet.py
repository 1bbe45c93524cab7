"""AlexNet: param count, registry, init, min input size, torchvision parity (eval and train)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
import weights_convert
from architectures.alexnet import TORCH_STAGES
from architectures.ops.avgpool_linear import AvgPoolLinear
from architectures.ops.conv import Conv
from hotspot_jax.errors import ConfigError
from parity_utils import (
    IMPLS,
    assert_eval_parity,
    assert_param_count,
    check,
    compare,
    disable_dropout,
    random_input,
    require_torch,
    to_nhwc,
    torch_model_for,
)

PUBLISHED = 61_100_840  # AlexNet_Weights.IMAGENET1K_V1.meta["num_params"], 1000 classes


def test_param_count_matches_published():
    assert architectures.get("alexnet").num_params == PUBLISHED
    assert assert_param_count("alexnet", PUBLISHED) == PUBLISHED


def test_registry_entries():
    spec = architectures.get("alexnet")
    assert (spec.input_size, spec.min_input_size, spec.classifier, spec.first_conv) == (
        227, 63, ("classifier_6",), "features_0"
    )
    w = architectures.weight_spec("alexnet.tv_in1k")
    assert (w.file_name, w.acc1, w.resize, w.crop, w.num_params, w.torchvision_enum) == (
        "alexnet-owt-7be5be79.pth", 56.522, 256, 224, PUBLISHED, "AlexNet_Weights.IMAGENET1K_V1"
    )


@pytest.mark.needs_torch
def test_registry_matches_torchvision_meta():
    require_torch()
    import torchvision

    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    spec, w = architectures.get("alexnet"), architectures.weight_spec("alexnet.tv_in1k")
    assert weights.meta["min_size"] == (spec.min_input_size, spec.min_input_size)
    assert weights.meta["num_params"] == spec.num_params
    assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == w.acc1
    assert weights.url.rsplit("/", 1)[-1] == w.file_name
    assert sum(p.numel() for p in torchvision.models.alexnet().parameters()) == PUBLISHED


def test_torch_default_init():
    model = architectures.create("alexnet", num_classes=12)

    @jax.jit
    def some_params(key):  # only what is returned gets computed (and compiled): XLA's CPU compile is slow
        params = model.init(key, jnp.zeros((1, 63, 63, 3)), train=False)["params"]
        return {name: params[name] for name in ("features_3", "classifier_6")}, params["classifier_1"]["bias"]

    params, fc1_bias = some_params(jax.random.PRNGKey(0))
    # torch's default: weight kaiming_uniform(a=sqrt(5)) and bias both U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for name, shape, fan_in in (("features_3", (5, 5, 64, 192), 64 * 25), ("classifier_6", (4096, 12), 4096)):
        kernel, bias = params[name]["kernel"], params[name]["bias"]
        bound = 1 / np.sqrt(fan_in)
        assert kernel.shape == shape, name
        assert 0.98 * bound < float(jnp.abs(kernel).max()) <= bound * (1 + 1e-6), name
        assert abs(float(jnp.std(kernel)) - bound / np.sqrt(3)) < 0.03 * bound, name
        assert float(jnp.abs(bias).max()) <= bound * (1 + 1e-6) and float(jnp.std(bias)) > 0.3 * bound, name
    bound = 1 / np.sqrt(256 * 6 * 6)
    assert fc1_bias.shape == (4096,) and 0.98 * bound < float(jnp.abs(fc1_bias).max()) <= bound * (1 + 1e-6)


def test_shapes_and_sown_stages():
    model = architectures.create("alexnet", num_classes=12)
    x = jnp.zeros((2, 63, 80, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert set(variables) == {"params"}
    assert sorted(variables["params"]) == sorted(
        ["features_0", "features_3", "features_6", "features_8", "features_10", "classifier_1", "classifier_4",
         "classifier_6"]
    )
    assert variables["params"]["classifier_1"]["kernel"].shape == (256 * 6 * 6, 4096)
    logits, state = jax.eval_shape(lambda v: model.apply(v, x, train=False, mutable=["intermediates"]), variables)
    assert logits.shape == (2, 12) and logits.dtype == jnp.float32
    shapes = {k: v[0].shape for k, v in state["intermediates"].items()}
    # 63x80: conv11 s4 p2 -> 15x19, pool -> 7x9, pool -> 3x4, pool -> 1x1, adaptive -> 6x6
    assert shapes == {
        "features.2": (2, 7, 9, 64), "features.5": (2, 3, 4, 192), "features.7": (2, 3, 4, 384),
        "features.9": (2, 3, 4, 256), "features.12": (2, 1, 1, 256), "avgpool": (2, 6, 6, 256),
    }
    assert set(shapes) == set(TORCH_STAGES)


def test_dropout_only_in_training():
    model = architectures.create("alexnet", num_classes=12)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 63, 63, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(  # He-scaled numpy weights: no slow init compile
        lambda s: jnp.asarray(rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1])) if len(s.shape) > 1
                              else np.zeros(s.shape), jnp.float32),
        shapes,
    )
    apply = jax.jit(lambda v, x, r, train: model.apply(v, x, train=train, rngs={"dropout": r}), static_argnums=3)
    eval_logits = apply(variables, x, jax.random.PRNGKey(2), False)
    eval_again = apply(variables, x, jax.random.PRNGKey(3), False)
    np.testing.assert_array_equal(np.asarray(eval_logits), np.asarray(eval_again))
    assert float(jnp.abs(eval_logits).max()) > 0.01
    assert float(jnp.abs(apply(variables, x, jax.random.PRNGKey(2), True) - eval_logits).max()) > 1e-3


def test_dtype_reaches_every_layer():
    model = architectures.create("alexnet", num_classes=3, dtype=jnp.bfloat16)
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, (Conv, nn.Dense, AvgPoolLinear)):
            seen.append(context.module)
        return next_fun(*args, **kwargs)

    x = jnp.zeros((2, 63, 63, 3))
    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert len(seen) == 8 and all(m.dtype == jnp.bfloat16 for m in seen)
    assert all(m.param_dtype == jnp.float32 for m in seen if not isinstance(m, AvgPoolLinear))  # its params: float32
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 63, 63, 3)), train=False), variables)
    assert logits.dtype == jnp.float32


def test_min_input_size():
    model = architectures.create("alexnet", num_classes=2)
    def init(h, w):
        return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3)), train=False))

    init(63, 63)  # accepted
    for h, w in ((62, 63), (63, 62)):
        with pytest.raises(ConfigError, match="alexnet needs inputs of at least 63x63"):
            init(h, w)
    with pytest.raises(ConfigError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((63, 63, 3)), train=False)


@pytest.mark.needs_torch
def test_min_input_size_is_torchvisions():
    require_torch()
    import torch

    model = torch_model_for("alexnet", num_classes=2)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 63, 63)).shape == (1, 2)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, 62, 62))


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_eval_parity_227_and_small_non_square(impl):
    # 227: the study's size; 100x67: adaptive pooling from 2x1 up to 6x6 (overlapping, repeated bins)
    model = torch_model_for("alexnet", num_classes=12)
    diffs = assert_eval_parity("alexnet", model, TORCH_STAGES, sizes=[(227, 227), (100, 67)], impl=impl)
    # randomly initialised logits are far below 1: also hold them to 1e-4 of their own scale
    assert all(d.max_abs_diff <= 1e-4 * d.scale for d in diffs if d.what.endswith("logits"))


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_train_mode_parity_without_dropout(impl):
    # no BatchNorm: with dropout off, train mode must compute what torch's train mode computes
    require_torch()
    import torch

    torch_model = disable_dropout(torch_model_for("alexnet", seed=2, num_classes=5)).train()
    variables = weights_convert.convert("alexnet", torch_model)
    model = architectures.create("alexnet", num_classes=5, dropout_rate=0.0, impl=impl)
    x = random_input(3, 96, 64, seed=7)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    ours = jax.jit(lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)}))(
        variables, jnp.asarray(to_nhwc(x))
    )
    (diff,) = check([compare("alexnet train 96x64 logits", ours, ref)])
    assert diff.max_abs_diff <= 1e-4 * diff.scale


def test_pooling_matrix_is_the_adaptive_pool():
    from architectures.ops import layers
    from architectures.ops.avgpool_linear import pooling_copies, pooling_matrix

    for hw in [(1, 1), (2, 2), (3, 2), (5, 4), (6, 6), (7, 9)]:
        x = jax.random.normal(jax.random.PRNGKey(0), (2, *hw, 3))
        pooled = layers.adaptive_avg_pool(x, 6)  # (2, 6, 6, 3)
        by_matrix = jnp.einsum("op,npc->noc", pooling_matrix(hw, (6, 6)), x.reshape(2, -1, 3)).reshape(2, 6, 6, 3)
        np.testing.assert_allclose(by_matrix, pooled, rtol=1e-6, atol=1e-6)
    assert pooling_copies((1, 1)) and pooling_copies((5, 5)) and not pooling_copies((6, 6))


@pytest.mark.parametrize("size", [64, 100])  # maps of 1x1 and 2x2 before the pool
def test_folded_pooling_gives_the_same_logits_and_gradients(size):
    from architectures.ops import impl

    x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 3))
    variables = architectures.create("alexnet", num_classes=3).init(jax.random.PRNGKey(0), x, train=False)

    def run(fold):
        model = architectures.create("alexnet", num_classes=3, dropout_rate=0.0,
                                     impl=impl.Impl("cpu", fold_pooling=fold))
        logits = model.apply(variables, x, train=False)
        grads = jax.grad(lambda v: jnp.sum(jnp.sin(model.apply(v, x, train=True))))(variables)
        return logits, grads

    (logits, grads), (ref_logits, ref_grads) = run(True), run(False)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(ref_logits).max()) > 1e-3
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, ref_grads)


def test_folding_is_skipped_with_dropout_in_training(monkeypatch):
    """Dropout draws a mask per copied value, so training with dropout must pool and flatten first."""
    from architectures.ops import avgpool_linear

    calls = []
    real = avgpool_linear.pooling_matrix
    monkeypatch.setattr(avgpool_linear, "pooling_matrix", lambda *a: calls.append(a) or real(*a))
    model = architectures.create("alexnet", num_classes=3, impl="cpu")  # dropout 0.5
    x = jnp.zeros((1, 64, 64, 3))
    jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x,
                                      train=True))
    assert calls == []
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))  # eval mode folds
    assert calls == [((1, 1), (6, 6))]
