"""Max pooling with a fast, torch-exact gradient for XLA's CPU backend.

JAX differentiates ``lax.reduce_window(max)`` into ``select_and_scatter``, which XLA:CPU lowers to an
index computation (iota + a reduce-window over (value, index) pairs) and a serial scatter: about half
of a SqueezeNet training step on a 2-core CPU. Here the gradient is written densely instead: for every
window offset ``k`` the output gradient goes where ``k`` holds the window's *first* maximum in
row-major order (what torch's ``max_pool2d`` backward does), and the offsets are put back in place
stride phase by stride phase (each phase is a sum of shifted output-sized arrays, interleaved once),
so there is no scatter and no integer division. Forward values are ``reduce_window``'s, unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Pads = tuple[tuple[int, int], tuple[int, int]]

# What the backward pass compares each window offset with: "unpadded", slices of x itself, the comparison padded
# with False (optimisation row 36: XLA:CPU wrote the -inf-padded copy of every pooled map, often as a standalone
# pad, which its CPU backend runs at about half the speed of an elementwise pass), or "padded", a -inf-padded copy
# of x (before; kept for the A/B tool and tests). Read when the backward pass is traced.
BACKWARD_READS = "unpadded"


def _window_max(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), ((0, 0), pads[0], pads[1], (0, 0))
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_nhwc(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    """Square max pool of NHWC ``x`` with explicit ``((top, bottom), (left, right))`` -inf padding."""
    return _window_max(x, window, stride, pads)


def _forward(x, window, stride, pads):
    y = _window_max(x, window, stride, pads)
    return y, (x, y)


def _backward(window, stride, pads, residuals, g):
    x, y = residuals
    n, h, w, c = x.shape
    ho, wo = y.shape[1], y.shape[2]
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf) if BACKWARD_READS == "padded" else None
    zero = jnp.zeros((), g.dtype)
    # the gradient each window offset (i, j) receives: g where (i, j) is the first maximum of its window
    parts: dict[tuple[int, int], jax.Array] = {}
    taken = None
    for i in range(window):
        for j in range(window):
            if xp is None:
                hit = offset_holds_maximum(x, y, i, j, stride, pads)
            else:
                hit = window_slice(xp, i, j, stride, (ho, wo)) == y
            if taken is not None:
                hit = hit & ~taken
            taken = hit if taken is None else taken | hit
            parts[i, j] = jnp.where(hit, g, zero)
    top, left = pads[0][0], pads[1][0]
    return (place_window_parts(parts, stride, (hp, wp))[:, top : top + h, left : left + w, :],)


def offset_holds_maximum(x: jax.Array, y: jax.Array, i: int, j: int, stride: int, pads: Pads) -> jax.Array:
    """(N, Ho, Wo, C) booleans: where offset (i, j) of a window lies inside ``x`` and equals the window's max ``y``.

    Reads only the windows whose offset falls inside ``x`` and pads the comparison with False, which is what
    comparing against a -inf-padded copy of ``x`` gives for a finite maximum, without writing that copy.
    """
    n, h, w, c = x.shape
    ho, wo = y.shape[1], y.shape[2]
    (a0, a1), (b0, b1) = (_inside(size, out, off, pad[0], stride) for size, out, off, pad in
                          ((h, ho, i, pads[0]), (w, wo, j, pads[1])))
    if a1 <= a0 or b1 <= b0:
        return jnp.zeros(y.shape, bool)
    r0, c0 = stride * a0 + i - pads[0][0], stride * b0 + j - pads[1][0]
    xs = jax.lax.slice(x, (0, r0, c0, 0), (n, r0 + stride * (a1 - a0 - 1) + 1, c0 + stride * (b1 - b0 - 1) + 1, c),
                       (1, stride, stride, 1))
    hit = xs == y[:, a0:a1, b0:b1, :]
    return jnp.pad(hit, ((0, 0), (a0, ho - a1), (b0, wo - b1), (0, 0)))


def _inside(size: int, out: int, offset: int, low_pad: int, stride: int) -> tuple[int, int]:
    """The output range [lo, hi) whose window cell at ``offset`` (input index stride * a + offset - low_pad)
    lies inside an axis of ``size``."""
    lo = max(0, -(-(low_pad - offset) // stride))
    hi = min(out, (size - 1 + low_pad - offset) // stride + 1)
    return lo, hi


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


max_pool_nhwc.defvjp(_forward, _backward)
