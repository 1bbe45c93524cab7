"""Building blocks shared by the architectures, written to compute exactly what torch's layers do.

Every conv and pool gets explicit symmetric padding (never ``'SAME'``, which pads asymmetrically on
stride 2 and so differs from torch), pools support torch's ``ceil_mode``, and BatchNorm uses torch's
momentum and epsilon. Inputs are NHWC.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


def batch_norm(
    train: bool,
    *,
    axis_name: str | None = None,
    epsilon: float = 1e-5,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    scale_init: Callable = nn.initializers.ones,
) -> nn.BatchNorm:
    """BatchNorm with torch's semantics: momentum 0.1 in torch's convention (0.9 in Flax's).

    ``axis_name`` synchronises batch statistics across ``pmap`` devices so that the device count
    does not change the result. Statistics are kept and computed in float32 whatever ``dtype`` is.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        axis_name=axis_name,
        scale_init=scale_init,
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
    x: jax.Array, window: int, stride: int, padding: int = 0, ceil_mode: bool = False
) -> jax.Array:
    """torch.nn.MaxPool2d on NHWC (padding counts as -inf, as in torch)."""
    pads = [_pool_padding(x.shape[ax], window, stride, padding, ceil_mode) for ax in (1, 2)]
    return jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        (1, window, window, 1),
        (1, stride, stride, 1),
        ((0, 0), pads[0], pads[1], (0, 0)),
    )


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
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        cols = []
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            cols.append(jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)))
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)


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
    from hotspot_jax.errors import ConfigError

    if x.ndim != 4:
        raise ConfigError(f"{arch} expects NHWC input (batch, height, width, 3), got shape {tuple(x.shape)}")
    h, w = x.shape[1], x.shape[2]
    if h < min_size or w < min_size:
        raise ConfigError(f"{arch} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w}")


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
