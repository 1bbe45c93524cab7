"""Building blocks shared by the architectures, written to compute exactly what torch's layers do.

Every conv and pool gets explicit symmetric padding (never ``'SAME'``, which pads asymmetrically on
stride 2 and so differs from torch), pools support torch's ``ceil_mode``, and BatchNorm uses torch's
momentum and epsilon. Inputs are NHWC. On the CPU path (``impl``) BatchNorm and ReLU-then-pool run in
forms with the same values that XLA:CPU trains faster (why: docs/performance.md, "Optimisation log").
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from architectures.errors import ConfigError
from architectures.ops import fusion_barrier
from architectures.ops.impl import Impl, resolve
from architectures.ops.pooling import max_pool_nhwc

Dtype = Any

# Initialisers matching torchvision's ``_initialize_weights`` conventions.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's default Conv2d/Linear init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Callable:
    """torch's default bias init for Conv2d/Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_padding(padding: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """torch's symmetric ``padding=p`` as Flax/lax explicit padding ((p, p), (p, p))."""
    ph, pw = pair(padding)
    return ((ph, ph), (pw, pw))


class TorchBatchNorm(nn.Module):
    """BatchNorm2d exactly as torch computes it, on NHWC.

    Training normalises with the biased batch variance but folds the *unbiased* one (x n/(n-1),
    n = values per channel over the global batch) into the running variance, as torch does; Flax's
    ``nn.BatchNorm`` folds the biased one, which drifts from torch when feature maps are small (the
    2x1 maps of a 40x24 module image make n/(n-1) about 1.6% at batch 32). With ``axis_name`` the
    statistics are averaged over ``pmap`` devices, so the device count does not change the result.
    On the CPU path the statistics are folded into one multiply-add per element (:func:`normalize`).
    Parameter and statistic names (``scale``, ``bias``, ``mean``, ``var``) are Flax's, so converted
    torchvision checkpoints load unchanged.
    """

    use_running_average: bool
    momentum: float = 0.1  # torch's convention: new = (1 - momentum) * old + momentum * batch
    epsilon: float = 1e-5
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    scale_init: Callable = nn.initializers.ones
    impl: Impl | str | None = None  # architectures.ops.impl: the form of the normalisation and its gradient

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        impl = resolve(self.impl)
        c = x.shape[-1]
        scale = self.param("scale", self.scale_init, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # at least float32; float64 stays (tests)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axis_name = None if self.is_initializing() else self.axis_name
            mean, var = batch_statistics(xf, axis_name, impl)
            if not self.is_initializing():
                n = math.prod(x.shape[:-1])
                if axis_name is not None:
                    n = n * jax.lax.psum(1, axis_name)
                unbiased = var * (n / jnp.maximum(n - 1, 1))
                ra_mean.value = ((1.0 - self.momentum) * ra_mean.value + self.momentum * mean).astype(jnp.float32)
                ra_var.value = ((1.0 - self.momentum) * ra_var.value + self.momentum * unbiased).astype(jnp.float32)
        return normalize(xf, mean, var, scale, bias, self.epsilon, impl).astype(self.dtype)


def batch_statistics(xf: jax.Array, axis_name: str | None, impl: Impl | str | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance over all but the last axis (and over ``axis_name``'s devices)."""
    axes = tuple(range(xf.ndim - 1))
    mean = jnp.mean(xf, axes)
    if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
    # two-pass variance: accurate where E[x^2] - E[x]^2 cancels
    impl = resolve(impl)
    if impl.cpu and impl.batchnorm_variance_grad == "closed-form":
        var = centred_variance(xf, mean)
    else:
        var = jnp.mean(jnp.square(xf - mean), axes)
    if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
    return mean, var


@jax.custom_vjp
def centred_variance(xf: jax.Array, mean: jax.Array) -> jax.Array:
    """``mean((x - mean)**2)`` per channel (last axis), with ``mean`` given: the two-pass variance.

    Its gradient is written out (``2 (x - mean) / n`` for ``x``): under JAX's autodiff XLA:CPU stored
    ``x - mean`` as a full-size tensor for the backward pass, and reduced a second full-size product for the
    gradient of ``mean``, which is ``-2 sum(x - mean) / n``, zero when ``mean`` is this array's own mean.
    Values and gradients equal autodiff's (tests/test_batchnorm.py).
    """
    return _centred_variance_forward(xf, mean)[0]


def _centred_variance_forward(xf, mean):
    axes = tuple(range(xf.ndim - 1))
    # the local mean costs a reduction XLA shares with the caller's jnp.mean; it gives mean's exact gradient
    # when mean is not xf's own (averaged over pmap devices)
    return jnp.mean(jnp.square(xf - mean), axes), (xf, mean, jnp.mean(xf, axes))


def _centred_variance_backward(residuals, g):
    xf, mean, local_mean = residuals
    n = math.prod(xf.shape[:-1])
    k = g * (2.0 / n)
    # x * k - mean * k, not (x - mean) * k: a different expression, so XLA does not merge it with the forward
    # pass's x - mean, which it can then fuse into the variance's reduction instead of storing it
    grad_x = xf * k - mean * k
    return grad_x.astype(xf.dtype), (-2.0 * g * (local_mean - mean)).astype(mean.dtype)


centred_variance.defvjp(_centred_variance_forward, _centred_variance_backward)


def normalize(xf, mean, var, scale, bias, epsilon: float, impl: Impl | str | None = None) -> jax.Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias``; on the CPU path (``Impl.batchnorm_form``) folded into one
    multiply-add per element, ``x * a + (bias - mean * a)``, whose autodiff XLA:CPU trains faster. Both forms
    give the same values and gradients (tests/test_batchnorm.py)."""
    a = jax.lax.rsqrt(var + epsilon) * scale
    impl = resolve(impl)
    if not impl.cpu or impl.batchnorm_form == "centred":
        return (xf - mean) * a + bias
    return xf * a + (bias - mean * a)


def batch_norm(
    train: bool,
    *,
    axis_name: str | None = None,
    epsilon: float = 1e-5,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    scale_init: Callable = nn.initializers.ones,
    impl: Impl | str | None = None,
) -> nn.Module:
    """torch's BatchNorm2d (momentum 0.1, running variance unbiased) in batch mode when ``train``.

    ``axis_name`` synchronises batch statistics across ``pmap`` devices so that the device count
    does not change the result. Statistics are kept and computed in float32 whatever ``dtype`` is.
    """
    return TorchBatchNorm(
        use_running_average=not train,
        momentum=0.1,
        epsilon=epsilon,
        axis_name=axis_name,
        dtype=dtype,
        scale_init=scale_init,
        impl=impl,
        name=name,
    )


def _pool_padding(size: int, window: int, stride: int, pad: int, ceil_mode: bool) -> tuple[int, int]:
    """(low, high) padding of one spatial axis that reproduces torch's output size rule."""
    if ceil_mode:
        out = math.ceil((size + 2 * pad - window) / stride) + 1
        # torch: the last window must start inside the input or the left padding
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = (size + 2 * pad - window) // stride + 1
    high = max((out - 1) * stride + window - size - pad, pad)
    return pad, high


def max_pool(
    x: jax.Array, window: int, stride: int, padding: int = 0, ceil_mode: bool = False,
    store_gradient: bool = False, impl: Impl | str | None = None,
) -> jax.Array:
    """torch.nn.MaxPool2d on NHWC (padding counts as -inf, as in torch).

    The gradient goes to each window's first maximum, as in torch, through the dense backward pass of
    :mod:`architectures.ops.pooling` on the CPU path (no ``select_and_scatter``, which XLA:CPU runs as a serial
    scatter); the reference path differentiates ``reduce_window``.
    ``store_gradient``: have XLA:CPU store the input gradient once (see :func:`max_pool_nhwc`).
    """
    pads = tuple(_pool_padding(x.shape[ax], window, stride, padding, ceil_mode) for ax in (1, 2))
    return max_pool_nhwc(x, window, stride, pads, store_gradient, impl)


def relu_max_pool(
    x: jax.Array, window: int, stride: int, padding: int = 0, ceil_mode: bool = False,
    store_gradient: bool = False, relu: Callable[..., jax.Array] | None = None, store_input: bool = False,
    impl: Impl | str | None = None,
) -> jax.Array:
    """torch's ReLU followed by its MaxPool2d, computed as the pool followed by the ReLU.

    The maximum is monotone, so ``max_pool(relu(x)) == relu(max_pool(x))`` exactly, and the gradient reaches
    the same element: each window's first maximum when that maximum is positive, nothing otherwise
    (tests/test_benchmark_pooling.py). Pooled first, on the CPU path, the ReLU and its backward mask run on the
    pooled map (a quarter of the size, for stride 2) instead of the full-size one. ``relu``: ``jax.nn.relu``
    (default) or one with the same values and gradients taking ``impl`` (``fusion_barrier.relu``).
    ``store_input``: have XLA:CPU compute the pool's input once and store it (:func:`fusion_barrier.stored`)
    instead of recomputing it, a BatchNorm output, inside the pool's forward and backward fusions.
    """
    impl = resolve(impl)
    act = jax.nn.relu if relu is None else functools.partial(relu, impl=impl)
    if impl.cpu and impl.pool_before_relu:
        if store_input and impl.store_pool_input:
            x = fusion_barrier.stored(x, impl)
        return act(max_pool(x, window, stride, padding, ceil_mode, store_gradient, impl))
    return max_pool(act(x), window, stride, padding, ceil_mode, store_gradient, impl)


def avg_pool(
    x: jax.Array, window: int, stride: int, padding: int = 0, ceil_mode: bool = False,
) -> jax.Array:
    """torch.nn.AvgPool2d on NHWC with count_include_pad=True (torch's default).

    Zero padding is counted in the divisor; extra right/bottom padding that only ``ceil_mode``
    adds is not (as in torch).
    """
    pads = [_pool_padding(x.shape[ax], window, stride, padding, ceil_mode) for ax in (1, 2)]
    full = ((0, 0), pads[0], pads[1], (0, 0))
    dims, strides = (1, window, window, 1), (1, stride, stride, 1)
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, full)
    if not ceil_mode or all(p[1] == padding for p in pads):
        return summed / (window * window)
    # divisor: window cells inside the input plus the symmetric padding, not the ceil-mode overhang
    ones = jnp.ones((1, x.shape[1] + 2 * padding, x.shape[2] + 2 * padding, 1), x.dtype)
    extra = ((0, 0), (0, pads[0][1] - padding), (0, pads[1][1] - padding), (0, 0))
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, extra)
    return summed / count


def adaptive_avg_pool(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d on NHWC: bin i spans [floor(i*H/o), ceil((i+1)*H/o))."""
    oh, ow = pair(output_size)
    h, w = x.shape[1], x.shape[2]
    if (oh, ow) == (1, 1):
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    if h % oh == 0 and w % ow == 0:
        kh, kw = h // oh, w // ow
        return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, kh, kw, 1), (1, kh, kw, 1), "VALID") / (kh * kw)
    rows = []
    for h0, h1 in adaptive_pool_bins(h, oh):
        cols = [jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)) for w0, w1 in adaptive_pool_bins(w, ow)]
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)


def adaptive_pool_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling bins along one axis: bin i spans [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def flatten_nchw(x: jax.Array) -> jax.Array:
    """Flatten an NHWC map in torch's NCHW order, so a converted Linear layer sees torch's layout."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet's channel shuffle on NHWC, equal to torchvision's NCHW reshape/transpose."""
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, groups, c // groups)
    x = jnp.swapaxes(x, 3, 4)
    return x.reshape(n, h, w, c)


def check_input_size(x: jax.Array, min_size: int, arch: str) -> None:
    """Raise a clear error when the spatial input is smaller than the network can take."""
    if x.ndim != 4:
        raise ConfigError(f"{arch} expects NHWC input (batch, height, width, 3), got shape {tuple(x.shape)}")
    h, w = x.shape[1], x.shape[2]
    if h < min_size or w < min_size:
        raise ConfigError(f"{arch} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w}")


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
