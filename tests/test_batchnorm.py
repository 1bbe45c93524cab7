"""BatchNorm: the folded form x * a + (bias - mean * a) against the centred (x - mean) * a + bias, and the
variance's closed-form gradient against autodiff."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures.ops import layers
from architectures.ops.impl import Impl

EPS = 1e-5


def _inputs(shape, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    return (jnp.asarray(rng.normal(offset, 2.0, shape)), jnp.asarray(rng.uniform(0.5, 1.5, c)),
            jnp.asarray(rng.normal(0, 1, c)), jnp.asarray(rng.normal(0, 1, shape)))


_CURRENT = [Impl("cpu")]  # the implementation the helpers below pass to the ops while a test runs


def _impl() -> Impl:
    return _CURRENT[-1]


def _with_setting(name, value, fn, *args):
    """``fn(*args)`` with the ops given the CPU implementation with its field ``name`` set to ``value``."""
    _CURRENT.append(dataclasses.replace(_impl(), **{name: value}))
    try:
        return fn(*args)
    finally:
        _CURRENT.pop()


def _with_form(form, fn, *args):
    return _with_setting("batchnorm_form", form, fn, *args)


def _train_loss(x, scale, bias, r):
    mean, var = layers.batch_statistics(x, None, _impl())
    y = layers.normalize(x, mean, var, scale, bias, EPS, _impl())
    return jnp.sum(jax.nn.relu6(y) * r) + jnp.sum(jnp.sin(y))


@pytest.mark.parametrize("shape", [(4, 5, 3, 6), (2, 1, 1, 8), (3, 7)])
def test_forms_give_the_same_values_and_gradients(shape):
    jax.config.update("jax_enable_x64", True)
    try:
        args = _inputs(shape)
        grad = jax.grad(_train_loss, (0, 1, 2))
        for form_value, ref_value in zip(_with_form("folded", grad, *args), _with_form("centred", grad, *args)):
            np.testing.assert_allclose(form_value, ref_value, rtol=1e-9, atol=1e-9)
        assert np.isclose(_with_form("folded", _train_loss, *args), _with_form("centred", _train_loss, *args))
    finally:
        jax.config.update("jax_enable_x64", False)


def test_folded_form_stays_accurate_in_float32_for_a_large_mean():
    """Folding loses float32 digits when |mean| >> std; at 50 std from 0 the error stays below 1e-4."""
    x, scale, bias, _ = _inputs((8, 6, 6, 4), seed=2, offset=100.0)

    def forward(x, scale, bias):
        mean, var = layers.batch_statistics(x, None, _impl())
        return layers.normalize(x, mean, var, scale, bias, EPS, _impl())

    y32 = _with_form("folded", forward, *(v.astype(jnp.float32) for v in (x, scale, bias)))
    jax.config.update("jax_enable_x64", True)
    try:
        y64 = _with_form("centred", forward, x, scale, bias)
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(np.asarray(y32, np.float64), np.asarray(y64), atol=1e-4)


@pytest.mark.parametrize("train", [True, False])
def test_module_gives_the_same_step_in_either_form(train):
    """TorchBatchNorm: outputs, running statistics and gradients agree between the two forms (float32)."""
    x, _, _, r = _inputs((4, 3, 3, 5), seed=3)
    x, r = x.astype(jnp.float32), r.astype(jnp.float32)
    variables = layers.batch_norm(train).init(jax.random.PRNGKey(0), x)
    stats = {"mean": variables["batch_stats"]["mean"] + 0.5, "var": variables["batch_stats"]["var"] * 2.0}
    params = {"scale": variables["params"]["scale"] * 1.5, "bias": variables["params"]["bias"] - 0.2}

    def step():
        bn = layers.batch_norm(train, impl=_impl())

        def loss(params):
            y, updates = bn.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
            return jnp.sum(jax.nn.relu(y) * r), (y, updates)
        return jax.grad(loss, has_aux=True)(params)

    (g_new, (y_new, s_new)), (g_old, (y_old, s_old)) = _with_form("folded", step), _with_form("centred", step)
    np.testing.assert_allclose(y_new, y_old, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_new, g_old)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), s_new, s_old)


def _with_variance_grad(kind, fn, *args):
    return _with_setting("batchnorm_variance_grad", kind, fn, *args)


def test_centred_variance_values_and_gradients_equal_autodiffs():
    """Also for a mean that is not x's own (as after a pmean over devices): its gradient is then not zero."""
    jax.config.update("jax_enable_x64", True)
    try:
        x, _, _, _ = _inputs((3, 4, 5, 6), seed=4)
        w = jnp.asarray(np.random.default_rng(5).normal(0, 1, 6))
        mean = jnp.mean(x, (0, 1, 2)) + jnp.linspace(-0.5, 0.5, 6)

        def plain(x, mean):
            return jnp.sum(jnp.mean(jnp.square(x - mean), (0, 1, 2)) * w)

        def closed(x, mean):
            return jnp.sum(layers.centred_variance(x, mean) * w)

        np.testing.assert_allclose(closed(x, mean), plain(x, mean), rtol=1e-12)
        got, want = jax.grad(closed, (0, 1))(x, mean), jax.grad(plain, (0, 1))(x, mean)
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)
        assert float(jnp.max(jnp.abs(want[1]))) > 0.1  # the mean's gradient was really tested
        g_own = jax.grad(closed, 1)(x, jnp.mean(x, (0, 1, 2)))
        np.testing.assert_allclose(g_own, 0.0, atol=1e-12)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("form", ["folded", "centred"])
def test_closed_form_variance_gives_autodiffs_training_gradients(form):
    jax.config.update("jax_enable_x64", True)
    try:
        args = _inputs((4, 5, 3, 6), seed=6)
        grad = jax.grad(_train_loss, (0, 1, 2))

        def with_both(kind):
            return _with_form(form, lambda: _with_variance_grad(kind, grad, *args))

        for got, want in zip(with_both("closed-form"), with_both("autodiff")):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    finally:
        jax.config.update("jax_enable_x64", False)


def _full_size_arrays_in_compiled_backward(kind):
    """How many arrays of the input's size the compiled BatchNorm + ReLU forward and backward pass makes."""
    x, scale, bias, r = (a.astype(jnp.float32) for a in _inputs((8, 12, 12, 16), seed=7))

    def loss(x, scale, bias):
        mean, var = layers.batch_statistics(x, None, _impl())
        return jnp.sum(jax.nn.relu(layers.normalize(x, mean, var, scale, bias, EPS, _impl())) * r)

    text = _with_variance_grad(kind, lambda: jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, scale, bias).compile().as_text())
    entry = text[text.index("\nENTRY"):]
    return sum(1 for line in entry.splitlines()
               if "= f32[8,12,12,16]" in line and "parameter(" not in line and " bitcast(" not in line)


def test_closed_form_variance_stores_fewer_full_size_arrays():
    """Row 35 of docs/performance.md: under autodiff XLA:CPU stored x - mean and a second product for the
    mean's gradient; the closed form lets it fuse x - mean into the variance's reduction."""
    assert _full_size_arrays_in_compiled_backward("closed-form") < _full_size_arrays_in_compiled_backward("autodiff")
