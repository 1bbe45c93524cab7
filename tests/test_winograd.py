"""Winograd's F(2x2, 3x3) convolution (architectures.ops.winograd) against ``lax.conv``: the same outputs and
gradients to float32 rounding for the shapes and paddings the networks use, odd and even maps, and the rule
in architectures.ops.conv that picks it."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures.ops import conv, winograd
from architectures.ops.impl import Impl

SHAPES = [  # (h, w, cin, cout, pads)
    (14, 14, 8, 16, ((1, 1), (1, 1))),  # even map, ResNet's "same" padding
    (7, 7, 16, 8, ((1, 1), (1, 1))),  # odd map: the last tile row and column are cropped
    (13, 9, 6, 10, ((1, 1), (1, 1))),  # non-square
    (8, 11, 5, 7, ((0, 0), (0, 0))),  # no padding
    (6, 5, 4, 4, ((2, 2), (2, 2))),  # padding 2
    (9, 6, 3, 5, ((0, 1), (2, 1))),  # asymmetric padding
    (3, 3, 4, 4, ((1, 1), (1, 1))),  # one tile
]


def _reference(x, kernel, pads):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _operands(h, w, cin, cout, seed=0):
    kx, kk = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, (3, h, w, cin)), jax.random.normal(kk, (3, 3, cin, cout)) * 0.3


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-{s[2]}to{s[3]}-pad{s[4]}")
def test_winograd_equals_lax_conv(shape):
    h, w, cin, cout, pads = shape
    x, kernel = _operands(h, w, cin, cout)
    y = winograd.conv3x3_winograd(x, kernel, pads)
    ref = _reference(x, kernel, pads)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("input_grad", ["winograd", "xla"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}-{s[2]}to{s[3]}-pad{s[4]}")
def test_custom_gradients_equal_lax_conv_gradients(shape, input_grad):
    h, w, cin, cout, pads = shape
    x, kernel = _operands(h, w, cin, cout, seed=1)

    def loss(f):
        return lambda inp, k: jnp.sum(jnp.sin(f(inp, k)))

    g = jax.grad(loss(lambda inp, k: winograd.conv3x3(inp, k, pads, input_grad)), argnums=(0, 1))(x, kernel)
    g_ref = jax.grad(loss(lambda inp, k: _reference(inp, k, pads)), argnums=(0, 1))(x, kernel)
    for a, b in zip(g, g_ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_transformed_kernel_is_g_times_kernel_times_g_transposed():
    g = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)
    kernel = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (3, 3, 2, 3)))
    expected = np.einsum("ai,ijco,bj->abco", g, kernel, g)
    np.testing.assert_allclose(winograd.transformed_kernel(jnp.asarray(kernel)), expected, rtol=1e-6, atol=1e-6)


def test_the_rule_that_picks_winograd():
    cpu = Impl("cpu", kernel_grad="xla", winograd_min_channels=112, winograd_min_output_pixels=100)
    same = ((1, 1), (1, 1))
    assert conv.uses_winograd((14, 14), (3, 3, 256, 256), (1, 1), same, cpu)  # ResNet-50 layer3 at 224 px
    assert conv.uses_winograd((28, 28), (3, 3, 128, 128), (1, 1), same, cpu)  # layer2
    assert conv.uses_winograd((13, 13), (3, 3, 192, 384), (1, 1), same, cpu)  # AlexNet conv3
    assert conv.uses_winograd((14, 14), (3, 3, 112, 224), (1, 1), same, cpu)  # GoogLeNet inception4b
    assert conv.uses_winograd((10, 10), (3, 3, 256, 256), (1, 1), same, cpu)  # 100 output pixels
    assert not conv.uses_winograd((7, 7), (3, 3, 512, 512), (1, 1), same, cpu)  # layer4: slower input gradient
    assert not conv.uses_winograd((8, 8), (3, 3, 128, 128), (1, 1), same, cpu)  # ResNet-50 layer2 at 64 px
    assert not conv.uses_winograd((56, 56), (3, 3, 64, 64), (1, 1), same, cpu)  # ResNet-50 layer1: slower there
    assert not conv.uses_winograd((28, 28), (3, 3, 96, 128), (1, 1), same, cpu)
    assert not conv.uses_winograd((14, 14), (3, 3, 256, 256), (2, 2), same, cpu)  # strided
    assert not conv.uses_winograd((14, 14), (5, 5, 256, 256), (1, 1), ((2, 2), (2, 2)), cpu)
    assert not conv.uses_winograd((14, 14), (3, 3, 256, 256), (1, 1), ((3, 3), (3, 3)), cpu)
    assert not conv.uses_winograd((14, 14), (3, 3, 256, 256), (1, 1), same, dataclasses.replace(cpu, conv="xla"))
    # convolutions on YNNPACK: XLA's kernel gradient is slow there
    assert not conv.uses_winograd((14, 14), (3, 3, 256, 256), (1, 1), same, dataclasses.replace(cpu, kernel_grad="shifts"))
    assert not conv.uses_winograd((14, 14), (3, 3, 256, 256), (1, 1), same,
                                  dataclasses.replace(cpu, winograd_min_channels=None))  # the A/B choice
    # the reference path (GPUs: cuDNN picks its own algorithms)
    assert not conv.uses_winograd((14, 14), (3, 3, 256, 256), (1, 1), same, dataclasses.replace(cpu, name="reference"))


def test_conv_module_through_winograd_equals_lax_conv(monkeypatch):
    """conv.Conv on a map large enough for lax.conv takes the Winograd path when the channels allow, with the
    same outputs and parameter gradients as the lax.conv path."""
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 9, 12, 8))
    kwargs = dict(features=12, kernel_size=(3, 3), padding=((1, 1), (1, 1)))
    cpu = Impl("cpu", kernel_grad="xla", winograd_min_channels=8, winograd_min_output_pixels=100)
    module = conv.Conv(**kwargs, impl=cpu)
    params = module.init(jax.random.PRNGKey(0), x)
    calls = []
    real = winograd.conv3x3

    def recording(*args):
        calls.append(args[2])
        return real(*args)

    def loss(module):
        return lambda prm: jnp.sum(jnp.sin(module.apply(prm, x)))

    monkeypatch.setattr(winograd, "conv3x3", recording)
    y, g = module.apply(params, x), jax.grad(loss(module))(params)
    assert calls == [((1, 1), (1, 1))] * 2, "the Winograd path was not taken"
    module = conv.Conv(**kwargs, impl=dataclasses.replace(cpu, winograd_min_channels=None))
    np.testing.assert_allclose(y, module.apply(params, x), rtol=1e-5, atol=2e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(jax.grad(loss(module))(params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert len(calls) == 2  # the reference did not go through Winograd
