"""The hand-written BatchNorm gradient (architectures.batchnorm) against JAX's autodiff of the plain form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures import layers
from architectures.batchnorm import normalize_batch

EPS = 1e-5


def _loss(normalize, axis_name=None):
    def loss(x, scale, bias, r):
        y, mean, var = normalize(x, scale, bias, EPS, axis_name)
        return jnp.sum(jax.nn.relu6(y) * r) + jnp.sum(jnp.sin(y))

    return loss


def _inputs(shape, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(offset, 2.0, shape)
    c = shape[-1]
    return (jnp.asarray(x), jnp.asarray(rng.uniform(0.5, 1.5, c)), jnp.asarray(rng.normal(0, 1, c)),
            jnp.asarray(rng.normal(0, 1, shape)))


@pytest.mark.parametrize("shape", [(4, 5, 3, 6), (2, 1, 1, 8), (3, 7)])
def test_values_and_gradients_match_autodiff(shape):
    jax.config.update("jax_enable_x64", True)
    try:
        x, scale, bias, r = _inputs(shape)
        ours = normalize_batch(x, scale, bias, EPS, None)
        ref = layers._normalize_batch_autodiff(x, scale, bias, EPS, None)
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        g_ours = jax.grad(_loss(normalize_batch), (0, 1, 2))(x, scale, bias, r)
        g_ref = jax.grad(_loss(layers._normalize_batch_autodiff), (0, 1, 2))(x, scale, bias, r)
        for a, b in zip(g_ours, g_ref):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_cross_device_gradients_match_autodiff_of_pmean():
    """With an axis name (here vmap's, as pmap's on several devices): dx sees every device, dscale does not."""
    jax.config.update("jax_enable_x64", True)
    try:
        x, scale, bias, r = _inputs((3, 4, 2, 2, 5), seed=1)  # 3 "devices" of batch 4

        def per_device(normalize):
            grad = jax.grad(_loss(normalize, "d"), (0, 1, 2))
            return jax.vmap(grad, in_axes=(0, None, None, 0), axis_name="d")(x, scale, bias, r)

        ours = per_device(normalize_batch)
        ref = per_device(layers._normalize_batch_autodiff)
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
        # the statistics really are global: each device's output differs from normalising it alone
        y_all = jax.vmap(lambda v: normalize_batch(v, scale, bias, EPS, "d")[0], axis_name="d")(x)
        y_alone = jax.vmap(lambda v: normalize_batch(v, scale, bias, EPS, None)[0])(x)
        assert not np.allclose(y_all, y_alone)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_float32_large_mean_stays_accurate():
    """The folded forward x * a + (bias - mean * a) keeps float32 accuracy for a mean 50 std away from 0."""
    x, scale, bias, _ = _inputs((8, 6, 6, 4), seed=2, offset=100.0)
    y32 = normalize_batch(x.astype(jnp.float32), scale.astype(jnp.float32), bias.astype(jnp.float32), EPS, None)[0]
    jax.config.update("jax_enable_x64", True)
    try:
        y64 = layers._normalize_batch_autodiff(x, scale, bias, EPS, None)[0]
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(np.asarray(y32, np.float64), np.asarray(y64), atol=2e-4)


def test_module_switch_gives_the_same_training_step():
    """TorchBatchNorm in training mode: same outputs, running statistics and gradients with either switch."""
    x, scale, bias, r = _inputs((4, 3, 3, 5), seed=3)
    x, r = x.astype(jnp.float32), r.astype(jnp.float32)
    bn = layers.batch_norm(True)
    variables = bn.init(jax.random.PRNGKey(0), x)

    def run():
        def loss(params):
            y, updates = bn.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                  mutable=["batch_stats"])
            return jnp.sum(jax.nn.relu(y) * r), updates
        return jax.grad(loss, has_aux=True)(variables["params"])

    old = layers.BATCHNORM_GRAD
    try:
        layers.BATCHNORM_GRAD = "autodiff"
        g_ref, stats_ref = run()
        layers.BATCHNORM_GRAD = "custom"
        g_ours, stats_ours = run()
    finally:
        layers.BATCHNORM_GRAD = old
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_ours, g_ref)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), stats_ours, stats_ref)
