"""The CPU-fast convolution (architectures.ops.conv) against ``nn.Conv``: the same parameters from the same
init, the same outputs and gradients (to float32 rounding) for every path, and the rule that picks
patches or lax.conv."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures.ops import conv
from architectures.ops.impl import Impl, convolutions_off_ynnpack

CPU = Impl("cpu")


CASES = [  # (h, w, cin, cout, kernel, stride, padding): shapes these networks use on module images
    (2, 2, 16, 8, 3, 1, 1),  # ResNet layer4 at 64 px: padding as large as the map
    (1, 1, 8, 8, 3, 1, 1),
    (3, 3, 12, 6, 3, 1, 1),  # AlexNet conv3-5 at 63 px
    (9, 7, 5, 7, 3, 2, 1),  # strided, non-square map
    (16, 16, 4, 6, 7, 2, 3),  # a first layer
    (15, 15, 3, 4, 11, 4, 2),  # AlexNet conv1
    (6, 5, 8, 16, 1, 1, 0),  # 1x1
    (7, 7, 8, 16, 1, 2, 0),  # strided 1x1 (ResNet downsample)
    (10, 10, 4, 4, 3, 1, 1),  # large enough for lax.conv under "auto"
    (12, 11, 4, 6, 5, 1, 2),  # AlexNet conv2's 5x5, by lax.conv
]


def _modules(cout, k, s, p, impl):
    kwargs = dict(features=cout, kernel_size=(k, k), strides=(s, s), padding=((p, p), (p, p)))
    return conv.Conv(**kwargs, impl=impl), nn.Conv(**kwargs)


@pytest.mark.parametrize("impl, kernel_grad", [("patches", "auto"), ("auto", "shifts"), ("auto", "xla")],
                         ids=["patches", "auto-shifted-kernel-grad", "auto-xla-kernel-grad"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_same_params_outputs_and_gradients_as_nn_conv(case, impl, kernel_grad):
    h, w, cin, cout, k, s, p = case
    ours, ref = _modules(cout, k, s, p, Impl("cpu", conv=impl, kernel_grad=kernel_grad))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, h, w, cin))
    params = ours.init(jax.random.PRNGKey(0), x)
    ref_params = ref.init(jax.random.PRNGKey(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(ref_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
        np.testing.assert_array_equal(a, b)  # same names, shapes and init draws

    y, y_ref = ours.apply(params, x), ref.apply(params, x)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)

    def loss(module):
        return lambda prm, inp: jnp.sum(jnp.sin(module.apply(prm, inp)))

    g = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_rule_on_the_cpu_path():
    no_pad = ((0, 0), (0, 0))
    same3 = ((1, 1), (1, 1))
    assert conv.uses_patches((56, 56), (1, 1), (1, 1), no_pad, CPU)  # every 1x1
    assert conv.uses_patches((2, 2), (3, 3), (1, 1), same3, CPU)  # tiny map
    assert conv.uses_patches((4, 4), (3, 3), (1, 1), same3, CPU)  # 16 output pixels
    assert not conv.uses_patches((5, 4), (3, 3), (1, 1), same3, CPU)  # 20
    assert conv.uses_patches((56, 56), (3, 3), (2, 2), same3, CPU)  # strided
    assert not conv.uses_patches((56, 56), (3, 3), (1, 1), same3, CPU)
    assert not conv.uses_patches((56, 56), (3, 3), (2, 2), same3, Impl("cpu", patches_for_strided=False))
    assert not conv.uses_patches((4, 4), (3, 3), (1, 1), same3, Impl("cpu", conv="xla"))
    assert conv.uses_patches((56, 56), (3, 3), (1, 1), same3, Impl("cpu", conv="patches"))


def test_large_first_layer_kernels_on_few_channels_keep_lax_conv():
    pads = ((2, 2), (2, 2))
    assert not conv.uses_patches((224, 224), (11, 11), (4, 4), pads, CPU, in_channels=3)  # AlexNet's first layer
    assert not conv.uses_patches((224, 224), (7, 7), (2, 2), pads, CPU, in_channels=3)  # GoogLeNet's, ResNet's
    assert conv.uses_patches((224, 224), (3, 3), (2, 2), pads, CPU, in_channels=3)  # 3x3 first layers stay patches
    assert conv.uses_patches((56, 56), (7, 7), (2, 2), pads, CPU, in_channels=64)  # not a first layer
    assert conv.uses_patches((224, 224), (7, 7), (1, 1), pads, Impl("cpu", conv="patches"), in_channels=3)
    assert conv.uses_patches((224, 224), (11, 11), (4, 4), pads, Impl("cpu", first_layer_max_channels=0), in_channels=3)


@pytest.mark.parametrize("kernel_hw, strides, pads", [((11, 11), (4, 4), ((2, 2), (2, 2))),
                                                      ((7, 7), (2, 2), ((3, 2), (3, 3))),
                                                      ((5, 5), (3, 2), ((0, 1), (2, 0)))])
def test_strided_shift_grad_equals_xla_gradients(kernel_hw, strides, pads):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 37, 29, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (*kernel_hw, 3, 6))

    def loss(f):
        return lambda inp, k: jnp.sum(jnp.sin(f(inp, k)))

    g = jax.grad(loss(lambda inp, k: conv.conv_xla_shift_grad(inp, k, pads, strides)), argnums=(0, 1))(x, kernel)
    g_ref = jax.grad(loss(lambda inp, k: conv.conv_xla(inp, k, strides, pads)), argnums=(0, 1))(x, kernel)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_reference_path_keeps_lax_conv():
    ref = Impl("reference")
    assert not conv.uses_patches((2, 2), (3, 3), (1, 1), ((1, 1), (1, 1)), ref)
    assert not conv.uses_patches((8, 8), (1, 1), (1, 1), ((0, 0), (0, 0)), ref)
    assert not conv.uses_shift_grad((1, 1), Impl("reference", kernel_grad="shifts"))


def test_which_convolutions_take_the_shifted_kernel_gradient():
    shifts = Impl("cpu", kernel_grad="shifts")
    assert conv.uses_shift_grad((1, 1), shifts)
    assert not conv.uses_shift_grad((2, 2), shifts)  # strided convolutions are patches anyway
    assert not conv.uses_shift_grad((1, 1), Impl("cpu", conv="xla", kernel_grad="shifts"))  # the A/B baseline
    assert conv.uses_shift_grad((4, 4), shifts, kernel_hw=(11, 11), in_channels=3)  # a large first layer
    xla = Impl("cpu", kernel_grad="xla")
    assert not conv.uses_shift_grad((1, 1), xla)
    assert not conv.uses_shift_grad((4, 4), xla, kernel_hw=(11, 11), in_channels=3)
    assert not conv.uses_patches((224, 224), (11, 11), (4, 4), ((2, 2), (2, 2)), xla, in_channels=3)  # still lax.conv


def test_auto_kernel_gradient_follows_where_xla_runs_convolutions(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
    assert CPU.kernel_grad_mode() == "xla"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_dot,-individual_convolution")
    assert CPU.kernel_grad_mode() == "xla"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_dot")
    assert CPU.kernel_grad_mode() == "shifts"  # convolutions on YNNPACK: XLA's kernel gradient is slow there
    assert not convolutions_off_ynnpack()
    monkeypatch.delenv("XLA_FLAGS")
    assert CPU.kernel_grad_mode() == "shifts"
    assert Impl("cpu", kernel_grad="xla").kernel_grad_mode() == "xla"


def test_images_per_chunk_divides_the_batch():
    assert conv.images_per_chunk(32, 56 * 56) == 1
    assert conv.images_per_chunk(32, 16 * 16) == 8  # 12 images fit; 8 is the largest divisor of 32 below
    assert conv.images_per_chunk(30, 16 * 16) == 10
    assert conv.images_per_chunk(7, 100 * 100) == 1
    assert conv.images_per_chunk(5, 1) == 5


@pytest.mark.parametrize("chunk_pixels", [1, 10**6, 150])  # one image per chunk, the whole batch, 2 of 6
@pytest.mark.parametrize("kernel_hw, pads", [((3, 3), ((1, 1), (1, 1))), ((5, 3), ((2, 1), (0, 2)))])
def test_kernel_grad_by_shifts_equals_xla_kernel_gradient(kernel_hw, pads, chunk_pixels):
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 9, 8, 5))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (*kernel_hw, 5, 7))
    y, kernel_vjp = jax.vjp(lambda k: conv.conv_xla(x, k, (1, 1), pads), kernel)
    dy = jax.random.normal(jax.random.PRNGKey(2), y.shape)
    (expected,) = kernel_vjp(dy)
    got = conv.kernel_grad_by_shifts(x, dy, kernel_hw, pads, chunk_pixels=chunk_pixels)
    assert got.shape == kernel.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    def loss(f):
        return lambda inp, k: jnp.sum(jnp.sin(f(inp, k)))

    g = jax.grad(loss(lambda inp, k: conv.conv_xla_shift_grad(inp, k, pads)), argnums=(0, 1))(x, kernel)
    g_ref = jax.grad(loss(lambda inp, k: conv.conv_xla(inp, k, (1, 1), pads)), argnums=(0, 1))(x, kernel)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hw", [3, 10], ids=["patches", "lax-conv-shifted-kernel-grad"])
def test_bfloat16_compute_float32_params(hw):
    ours = conv.Conv(features=8, kernel_size=(3, 3), padding=((1, 1), (1, 1)), dtype=jnp.bfloat16, impl="cpu")
    x = jax.random.normal(jax.random.PRNGKey(0), (2, hw, hw, 4))
    params = ours.init(jax.random.PRNGKey(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    y = ours.apply(params, x)
    assert y.dtype == jnp.bfloat16
    ref = nn.Conv(features=8, kernel_size=(3, 3), padding=((1, 1), (1, 1))).apply(params, x)
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=0.05, atol=0.05)
    grads = jax.grad(lambda prm: jnp.sum(ours.apply(prm, x).astype(jnp.float32) ** 2))(params)
    assert all(leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(grads))
