"""Depthwise convolution (one k x k filter per channel), written out as k*k shifted multiply-adds on the CPU path.

Why: ``lax.conv`` with ``feature_group_count == C`` takes slow generic paths on XLA's CPU backend three times
over: the forward grouped convolution, its filter gradient, which becomes a *dense* C x C convolution whose
diagonal is kept (C times the work: 576x for MobileNetV2's widest layers), and the input gradient of a strided
layer, an input-dilated convolution (evidence: docs/performance.md, "Optimisation log", depthwise). Here all
three are k*k shifted, strided multiply-adds that XLA fuses into single loops: the forward sum, the filter
gradient as one variadic reduction of k*k per-channel sums per image, the input gradient placed back with
:func:`architectures.ops.pooling.place_window_parts`. Sums are accumulated in at least float32. Values and
gradients equal the grouped ``lax.conv``'s (tests/test_benchmark_depthwise.py); the reference path runs that.

:class:`DepthwiseConv` is a drop-in for ``nn.Conv(features=C, feature_group_count=C)`` on C input
channels: same parameter names and shapes (``kernel`` (kh, kw, 1, C), optional ``bias``), same init.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.ops.conv import ConvAttributes
from architectures.ops.impl import resolve
from architectures.ops.pooling import place_window_parts, window_slice

Pads = tuple[tuple[int, int], tuple[int, int]]


def _conv(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads) -> jax.Array:
    """The same depthwise conv as XLA's grouped convolution (the reference the tests compare with)."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )


def _out_hw(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads) -> tuple[int, int]:
    return tuple((x.shape[1 + a] + pads[a][0] + pads[a][1] - kernel.shape[a]) // stride + 1 for a in (0, 1))


def _shifted_sum(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads) -> jax.Array:
    """sum over (i, j) of the (i, j)-shifted strided input times kernel[i, j]: one fused loop."""
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_hw = _out_hw(x, kernel, stride, pads)
    y = None
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            term = window_slice(xp, i, j, stride, out_hw).astype(acc) * kernel[i, j, 0].astype(acc)
            y = term if y is None else y + term
    return y.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_nhwc(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads) -> jax.Array:
    """Depthwise conv of NHWC ``x`` with an HWIO ``kernel`` (kh, kw, 1, C), explicit zero padding."""
    return _shifted_sum(x, kernel, stride, pads)


def _forward(x, kernel, stride, pads):
    return _shifted_sum(x, kernel, stride, pads), (x, kernel)


def _backward(stride, pads, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[0], kernel.shape[1]
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    dk = _filter_grad(xp, g, (kh, kw), stride).astype(kernel.dtype)
    parts = {(i, j): g * kernel[i, j, 0].astype(g.dtype) for i in range(kh) for j in range(kw)}
    dxp = place_window_parts(parts, stride, xp.shape[1:3])
    top, left = pads[0][0], pads[1][0]
    return dxp[:, top : top + h, left : left + w, :].astype(x.dtype), dk


def _filter_grad(xp: jax.Array, g: jax.Array, kernel_hw: tuple[int, int], stride: int) -> jax.Array:
    """dk[i, j, 0, c] = sum over (n, y, x) of window (i, j) of the padded input times the output gradient.

    One image at a time (``lax.scan`` over the batch): the k*k sums of an image are one variadic
    reduction over its rows, added to a (k*k, W, C) total that is summed over W at the end. Each
    image's input and gradient (1.6 MB at 112x112x32) stay in cache while the k*k products read them;
    one reduction over the whole batch's (N, H) walked each (w, c) column through all N*H rows, far apart
    in memory. Sums are in at least float32.
    """
    kh, kw = kernel_hw
    acc = jnp.promote_types(g.dtype, jnp.float32)
    out_hw = g.shape[1:3]

    def add_image(total, image):
        xi, gi = image
        gf = gi.astype(acc)
        terms = tuple(
            window_slice(xi[None], i, j, stride, out_hw)[0].astype(acc) * gf for i in range(kh) for j in range(kw)
        )
        zeros = tuple(jnp.zeros((), acc) for _ in terms)
        sums = jax.lax.reduce(terms, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (0,))  # k*k x (W, C)
        return total + jnp.stack(sums), None

    total, _ = jax.lax.scan(add_image, jnp.zeros((kh * kw,) + g.shape[2:], acc), (xp, g))
    return total.sum(1).reshape(kh, kw, 1, -1)


depthwise_conv_nhwc.defvjp(_forward, _backward)


class DepthwiseConv(ConvAttributes):
    """``nn.Conv(features, kernel_size, feature_group_count=features)`` on ``features`` channels, NHWC."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.features:
            raise ValueError(f"DepthwiseConv: {self.features} features but {x.shape[-1]} input channels")
        if self.strides[0] != self.strides[1]:
            raise ValueError(f"DepthwiseConv: square strides only, got {self.strides}")
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, 1, self.features), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, kernel)
        conv = depthwise_conv_nhwc if resolve(self.impl).cpu else _conv  # reference: lax's grouped conv
        y = conv(x.astype(dtype), kernel.astype(dtype), self.strides[0], tuple(self.padding))
        return self.add_bias(y, dtype)
