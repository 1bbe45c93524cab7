"""Max pooling with a torch-exact gradient written densely, for XLA's CPU backend.

JAX differentiates ``lax.reduce_window(max)`` into ``select_and_scatter``, which XLA:CPU lowers to an
index computation (iota + a reduce-window over (value, index) pairs) and a serial scatter, a large share of
a pooled network's CPU training step (docs/performance.md, "Optimisation log"). Here the gradient is written
densely instead: for every window offset ``k`` the output gradient goes where ``k`` holds the window's
*first* maximum in row-major order (what torch's ``max_pool2d`` backward does), and the offsets are put back
in place stride phase by stride phase (each phase is a sum of shifted output-sized arrays, interleaved once),
so there is no scatter and no integer division. Forward values are ``reduce_window``'s, unchanged; gradients
equal autodiff's and torch's (tests/test_benchmark_pooling.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from architectures.ops import fusion_barrier
from architectures.ops.impl import Impl, resolve

Pads = tuple[tuple[int, int], tuple[int, int]]


def _window_max(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), ((0, 0), pads[0], pads[1], (0, 0))
    )


def max_pool_nhwc(x: jax.Array, window: int, stride: int, pads: Pads, store_gradient: bool = False,
                  impl: Impl | str | None = None) -> jax.Array:
    """Square max pool of NHWC ``x`` with explicit ``((top, bottom), (left, right))`` -inf padding.

    The reference path is ``reduce_window`` with JAX's gradient (select-and-scatter); the CPU path has the
    dense gradient of the module doc. With ``store_gradient`` (and ``impl.store_pool_gradient``) the input gradient is divided by
    a 1 from :mod:`architectures.ops.fusion_barrier`, so XLA:CPU computes it once and stores it instead of fusing
    its k*k window parts into every reader (GoogLeNet's Inception input gradient was recomputed in each
    branch's backward pass). The same 1 divides the output, a second use that keeps XLA from turning the
    division into a multiplication; values and gradients are unchanged, bit for bit
    (tests/test_benchmark_pooling.py).
    """
    impl = resolve(impl)
    if not impl.cpu:  # reduce_window and its own gradient (select-and-scatter)
        return _window_max(x, window, stride, pads)
    if store_gradient and impl.store_pool_gradient and fusion_barrier.active(impl):
        return _max_pool_stored(x, fusion_barrier.barrier_one(x.dtype), window, stride, pads)
    return _max_pool(x, window, stride, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    return _window_max(x, window, stride, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _max_pool_stored(x, one, window, stride, pads):
    return _window_max(x, window, stride, pads) / one


def _forward_stored(x, one, window, stride, pads):
    y = _window_max(x, window, stride, pads) / one
    return y, (x, y, one)


def _backward_stored(window, stride, pads, residuals, g):
    x, y, one = residuals
    (grad,) = _backward(window, stride, pads, (x, y), g)
    return grad / one, jnp.zeros((), one.dtype)


def _forward(x, window, stride, pads):
    y = _window_max(x, window, stride, pads)
    return y, (x, y)


def _backward(window, stride, pads, residuals, g):
    x, y = residuals
    n, h, w, c = x.shape
    ho, wo = y.shape[1], y.shape[2]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf)
    hp, wp = xp.shape[1], xp.shape[2]
    zero = jnp.zeros((), g.dtype)
    # the gradient each window offset (i, j) receives: g where (i, j) is the first maximum of its window
    parts: dict[tuple[int, int], jax.Array] = {}
    taken = None
    for i in range(window):
        for j in range(window):
            hit = window_slice(xp, i, j, stride, (ho, wo)) == y
            if taken is not None:
                hit = hit & ~taken
            taken = hit if taken is None else taken | hit
            parts[i, j] = jnp.where(hit, g, zero)
    top, left = pads[0][0], pads[1][0]
    return (place_window_parts(parts, stride, (hp, wp))[:, top : top + h, left : left + w, :],)


def window_slice(xp: jax.Array, i: int, j: int, stride: int, out_hw: tuple[int, int]) -> jax.Array:
    """The (N, Ho, Wo, C) values at offset (i, j) of every window of a padded NHWC input."""
    n, _, _, c = xp.shape
    ho, wo = out_hw
    return jax.lax.slice(
        xp, (0, i, j, 0), (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c), (1, stride, stride, 1)
    )


def place_window_parts(parts: dict[tuple[int, int], jax.Array], stride: int, padded_hw: tuple[int, int]) -> jax.Array:
    """Sum window-offset contributions back onto the padded input grid, without a scatter.

    ``parts[i, j]`` (N, Ho, Wo, C) is what output cell (a, b) sends to padded input cell
    (stride * a + i, stride * b + j). Padded row ``stride * r + u`` receives offset ``i = u + stride * d``
    from output row ``r - d``, so each of the stride x stride phases is a sum of shifted output-sized
    arrays; the phases are interleaved once. Returns (N, Hp, Wp, C).
    """
    first = next(iter(parts.values()))
    n, ho, wo, c = first.shape
    hp, wp = padded_hw
    zero = jnp.zeros((), first.dtype)
    rows, cols = -(-hp // stride), -(-wp // stride)
    phase_rows = []
    for u in range(stride):
        phase_cols = []
        for v in range(stride):
            acc = jnp.zeros((n, rows, cols, c), first.dtype)
            for (i, j), part in parts.items():
                if i % stride == u and j % stride == v:
                    di, dj = (i - u) // stride, (j - v) // stride
                    acc = acc + jax.lax.pad(
                        part, zero, ((0, 0, 0), (di, rows - di - ho, 0), (dj, cols - dj - wo, 0), (0, 0, 0))
                    )
            phase_cols.append(acc)
        phase_rows.append(jnp.stack(phase_cols, axis=3))  # (n, rows, cols, stride_v, c)
    full = jnp.stack(phase_rows, axis=2).reshape(n, rows * stride, cols * stride, c)
    return full[:, :hp, :wp, :]


_max_pool.defvjp(_forward, _backward)
_max_pool_stored.defvjp(_forward_stored, _backward_stored)
