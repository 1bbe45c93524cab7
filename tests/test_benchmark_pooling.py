"""The fast max-pool gradient (architectures.ops.pooling) against JAX's own autodiff and torch's max_pool2d.

Every pooling configuration the six architectures use is checked, plus ties (the first maximum of a
window in row-major order gets the gradient, as in torch) and bfloat16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures.ops import layers
from architectures.ops.impl import Impl
from architectures.ops.pooling import max_pool_nhwc

# (window, stride, padding, ceil_mode) of every max pool in the six architectures
CONFIGS = [
    (3, 2, 0, True),  # SqueezeNet, GoogLeNet
    (3, 2, 0, False),  # AlexNet
    (3, 2, 1, False),  # ResNet, ShuffleNetV2
    (3, 1, 1, True),  # GoogLeNet inception branch
    (2, 2, 0, True),  # GoogLeNet maxpool4
]


def _pads(shape, window, stride, padding, ceil_mode):
    return tuple(layers._pool_padding(shape[ax], window, stride, padding, ceil_mode) for ax in (1, 2))


def _reference(x, window, stride, pads):
    """JAX's own autodiff of reduce_window max (select_and_scatter)."""
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), ((0, 0), pads[0], pads[1], (0, 0))
    )


def _loss(pool, weights):
    return lambda x: jnp.sum(pool(x) * weights)


@pytest.mark.parametrize("window,stride,padding,ceil_mode", CONFIGS)
@pytest.mark.parametrize("hw", [(9, 9), (8, 11)])
def test_values_and_gradient_equal_autodiff(window, stride, padding, ceil_mode, hw):
    rng = np.random.default_rng(hash((window, stride, padding, ceil_mode, hw)) % 2**32)
    x = jnp.asarray(rng.standard_normal((2, *hw, 3), dtype=np.float32))
    pads = _pads(x.shape, window, stride, padding, ceil_mode)
    y_ref = _reference(x, window, stride, pads)
    y = max_pool_nhwc(x, window, stride, pads)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    w = jnp.asarray(rng.standard_normal(y.shape, dtype=np.float32))
    g_ref = jax.grad(_loss(lambda v: _reference(v, window, stride, pads), w))(x)
    g = jax.jit(jax.grad(_loss(lambda v: max_pool_nhwc(v, window, stride, pads), w)))(x)
    assert g.shape == x.shape
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(g).sum()) > 0


def test_ties_go_to_the_first_maximum():
    """A constant image: every window's maximum is tied; torch gives the whole gradient to its first cell."""
    x = jnp.ones((1, 5, 5, 1), jnp.float32)
    pads = _pads(x.shape, 3, 2, 0, False)  # windows start at rows/cols 0 and 2
    g = jax.grad(lambda v: jnp.sum(max_pool_nhwc(v, 3, 2, pads)))(x)[0, :, :, 0]
    expected = np.zeros((5, 5), np.float32)
    for r in (0, 2):
        for c in (0, 2):
            expected[r, c] = 1.0
    np.testing.assert_array_equal(np.asarray(g), expected)


def test_bfloat16_keeps_dtype():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 9, 4)), jnp.bfloat16)
    pads = _pads(x.shape, 3, 2, 1, False)
    g = jax.grad(lambda v: jnp.sum(max_pool_nhwc(v, 3, 2, pads).astype(jnp.float32)))(x)
    assert g.dtype == jnp.bfloat16
    assert float(jnp.sum(g.astype(jnp.float32))) == pytest.approx(2 * 5 * 5 * 4)  # one unit per output cell


@pytest.mark.needs_torch
@pytest.mark.parametrize("window,stride,padding,ceil_mode", CONFIGS)
def test_gradient_equals_torch(window, stride, padding, ceil_mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 10, 7, 3)).astype(np.float32)
    x[:, ::3, ::2] = 0.25  # plateaus: ties inside windows
    pads = _pads(x.shape, window, stride, padding, ceil_mode)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    ty = torch.nn.functional.max_pool2d(tx, window, stride, padding, ceil_mode=ceil_mode)
    w = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (ty * torch.from_numpy(w)).sum().backward()
    y = max_pool_nhwc(jnp.asarray(x), window, stride, pads)
    np.testing.assert_array_equal(np.asarray(y), ty.detach().numpy().transpose(0, 2, 3, 1))
    g = jax.grad(_loss(lambda v: max_pool_nhwc(v, window, stride, pads), jnp.asarray(w.transpose(0, 2, 3, 1))))(
        jnp.asarray(x)
    )
    np.testing.assert_allclose(np.asarray(g), tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def _two_readers_loss(store, weights):
    """A pooled map read by two consumers (as GoogLeNet's Inception branches read their input)."""
    def loss(x):
        y = max_pool_nhwc(jnp.maximum(x, 0.0) * 1.5, 3, 1, ((1, 1), (1, 1)), store)
        return jnp.sum(jnp.sin(y) * weights) + jnp.sum(jnp.cos(y[..., :2]))
    return loss


def test_stored_gradient_is_bit_identical_and_its_division_survives_compilation():
    """Row 37: store_gradient divides by a 1 that XLA cannot fold; nothing changes but where the gradient lives."""
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.standard_normal((2, 7, 6, 4), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((2, 7, 6, 4), dtype=np.float32))
    plain = jax.jit(jax.value_and_grad(_two_readers_loss(False, w)))
    stored = jax.jit(jax.value_and_grad(_two_readers_loss(True, w)))
    (v0, g0), (v1, g1) = plain(x), stored(x)
    np.testing.assert_array_equal(np.asarray(v1), np.asarray(v0))
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g0))
    divides = lambda f: f.lower(x).compile().as_text().count(" divide(")
    assert divides(stored) >= divides(plain) + 2


@pytest.mark.parametrize("window,stride,padding,ceil_mode", CONFIGS)
@pytest.mark.parametrize("relu, store_input", [("jax", False), ("fusion_barrier", False), ("jax", True)])
def test_pool_then_relu_equals_relu_then_pool_bit_for_bit(window, stride, padding, ceil_mode, relu,
                                                           store_input):
    """Row 38: relu_max_pool pools first; values and gradients equal torch's order (ReLU first), including
    windows whose maximum is negative or zero and windows with ties."""
    from architectures.ops import fusion_barrier

    act = None if relu == "jax" else fusion_barrier.relu
    rng = np.random.default_rng(window * 100 + stride * 10 + padding)
    x = rng.standard_normal((2, 9, 10, 4)).astype(np.float32)
    x[0, :4, :4, 0] = -1.0  # windows whose maximum is negative
    x[0, 5:, 5:, 1] = 0.0  # windows whose maximum is 0, tied
    x[1, :, :, 2] = np.round(x[1, :, :, 2])  # many ties among positive and negative values
    x[1, 2:5, 2:5, 3] = -0.0
    x = jnp.asarray(x)
    w = jnp.asarray(rng.standard_normal(layers.max_pool(x, window, stride, padding, ceil_mode).shape, np.float32))

    def value_and_grad(before):
        def pool(v):
            return layers.relu_max_pool(v, window, stride, padding, ceil_mode, relu=act, store_input=store_input,
                                        impl=Impl("cpu", pool_before_relu=before))

        return jax.jit(jax.value_and_grad(_loss(pool, w)))(x), jax.jit(pool)(x)

    (loss, grad), y = value_and_grad(True)
    (ref_loss, ref_grad), ref_y = value_and_grad(False)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref_y))
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(ref_grad))
    assert np.asarray(loss) == np.asarray(ref_loss)
    assert 0 < int((np.asarray(grad) != 0).sum()) < x.size  # some cells get gradient, the masked ones do not


@pytest.mark.parametrize("arch, size", [("googlenet", 33), ("resnet50", 32), ("shufflenet_v2_x1_0", 32),
                                        ("alexnet", 63), ("squeezenet1_1", 35)])
def test_networks_pooling_first_equal_relu_first(arch, size):
    """Row 38 in the networks: logits, sown stages, BatchNorm statistics and gradients of a training step equal
    torch's order (ReLU first), within float32 reordering by XLA."""
    import architectures

    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((4, size, size, 3)), jnp.float32)
    variables = architectures.create(arch, num_classes=3).init(jax.random.PRNGKey(0), x, train=False)
    mutable = ["batch_stats", "intermediates"] if "batch_stats" in variables else ["intermediates"]

    def run(before):
        model = architectures.create(arch, num_classes=3, impl=Impl("cpu", pool_before_relu=before))

        def loss(params):
            y, state = model.apply({**variables, "params": params}, x, train=True, mutable=mutable,
                                   rngs={"dropout": jax.random.PRNGKey(1)})
            return jnp.sum(y * jnp.arange(3.0)), (y, state)

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

    (_, (y, state)), grads = run(True)
    (_, (y_ref, state_ref)), grads_ref = run(False)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(state_ref)
    for a, b in zip(jax.tree.leaves((y, state, grads)), jax.tree.leaves((y_ref, state_ref, grads_ref))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                   atol=1e-5 * max(float(np.abs(np.asarray(b)).max()), 1e-3))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("window,stride,padding,ceil_mode", [(3, 2, 0, True), (3, 2, 0, False), (3, 2, 1, False)])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_bias_added_after_the_pool(window, stride, padding, ceil_mode, kernel):
    """Row 43: conv_relu_max_pool pools the bias-free convolution and adds bias and ReLU to the pooled map;
    values equal torch's order (bias, ReLU, pool) bit for bit, gradients (kernel, bias, input) to rounding."""
    from architectures.ops.conv import Conv, conv_relu_max_pool

    rng = np.random.default_rng(kernel * 10 + padding)
    x = jnp.asarray(rng.standard_normal((2, 11, 9, 5)), jnp.float32)
    conv = Conv(6, (kernel, kernel), padding=layers.torch_padding(kernel // 2))
    variables = conv.init(jax.random.PRNGKey(0), x)
    bias = jnp.asarray(rng.standard_normal(6), jnp.float32)  # nonzero: a zero bias would not test the order
    params = {**variables["params"], "bias": bias}
    out_shape = layers.max_pool(conv.apply({"params": params}, x), window, stride, padding, ceil_mode).shape
    w = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)

    def run(after):
        conv = Conv(6, (kernel, kernel), padding=layers.torch_padding(kernel // 2), impl=Impl("cpu", bias_after_pool=after))

        def loss(p, x):
            y = conv.apply({"params": p}, x, method=lambda m, x: conv_relu_max_pool(m, x, window, stride, padding,
                                                                                     ceil_mode))
            return jnp.sum(y * w), y

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)

    (_, y), grads = run(True)
    (_, y_ref), grads_ref = run(False)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    assert 0 < int((np.asarray(y) > 0).sum()) < y.size  # the ReLU cut some pooled values, not all
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        assert float(jnp.abs(r).max()) > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5 * float(jnp.abs(r).max()))


def test_conv_bias_after_pool_leaves_no_full_size_bias_add():
    """Row 43's point: with the bias after the pool, the compiled forward pass has no add of the full-size map."""
    from architectures.ops.conv import Conv, conv_relu_max_pool

    x = jnp.ones((2, 32, 32, 3), jnp.float32)
    conv = Conv(8, (3, 3), strides=(2, 2))
    variables = conv.init(jax.random.PRNGKey(0), x)
    full_size = "tensor<2x15x15x8xf32>"  # the convolution's output; the pooled map is 2x7x7x8

    def full_size_adds(after):
        conv = Conv(8, (3, 3), strides=(2, 2), impl=Impl("cpu", bias_after_pool=after))
        f = jax.jit(lambda v, x: conv.apply(v, x, method=lambda m, x: conv_relu_max_pool(m, x, 3, 2, ceil_mode=True)))
        return sum("stablehlo.add" in line and full_size in line for line in f.lower(variables, x).as_text().splitlines())

    assert full_size_adds(False) >= 1
    assert full_size_adds(True) == 0
