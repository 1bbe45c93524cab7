"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms
for Convolutional Neural Networks", CVPR 2016): each 2x2 block of outputs from a 4x4 input tile with 16
multiplications per channel pair instead of 36, so the matrix products do 2.25x fewer operations than a direct
convolution, at the cost of transforming the input and output tiles (memory-bound elementwise passes).

Why: XLA:CPU's own convolution already runs near the matrix-product rate, so on wide 3x3 layers only fewer
multiplications can gain; :mod:`architectures.ops.conv` decides where (evidence: docs/performance.md,
"Optimisation log", Winograd). The input gradient of a stride-1 convolution is itself a stride-1 convolution
(of the output gradient with the kernel rotated and its channels swapped), so it is computed the same way; the
kernel gradient is XLA's. Values and gradients equal ``lax.conv``'s up to the float32 rounding of the
transforms' few extra additions (about 1e-6 relative; tests/test_winograd.py bounds it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Pads = tuple[tuple[int, int], tuple[int, int]]

def _input_rows(r: list[jax.Array]) -> list[jax.Array]:
    """B^T d along one axis, for the four strided slices d_0..d_3 of a tile's rows (or columns)."""
    return [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]


def _output_rows(m: list[jax.Array]) -> list[jax.Array]:
    """A^T m along one axis: two outputs from the four transformed values."""
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def _tile_slices(a: jax.Array, axis: int, t: int) -> list[jax.Array]:
    """The four slices of ``a`` (2t + 2 entries along ``axis``) at entries 2i + k, i < t, for k = 0..3: the
    rows (or columns) of every 4-wide tile with stride 2, taken through a reshape into (t + 1, 2) blocks so
    that XLA sees plain slices, not strided ones (which it compiled into many small loops)."""
    r = a.reshape(a.shape[:axis] + (t + 1, 2) + a.shape[axis + 1:])

    def part(block: int, phase: int) -> jax.Array:
        index = [slice(None)] * r.ndim
        index[axis], index[axis + 1] = slice(block, block + t), phase
        return r[tuple(index)]

    return [part(0, 0), part(0, 1), part(1, 0), part(1, 1)]


def _kernel_rows(g: list[jax.Array]) -> list[jax.Array]:
    """G g along one axis: four values from the kernel's three."""
    return [g[0], (g[0] + g[1] + g[2]) * 0.5, (g[0] - g[1] + g[2]) * 0.5, g[2]]


def transformed_kernel(kernel: jax.Array) -> jax.Array:
    """U = G g G^T for every channel pair: (3, 3, Cin, Cout) -> (4, 4, Cin, Cout), as elementwise sums (an
    einsum with the 4x3 matrix compiled to narrow transposes; tests/test_winograd.py checks it is G g G^T)."""
    rows = _kernel_rows([kernel[i] for i in range(3)])  # 4 x (3, Cin, Cout)
    return jnp.stack([jnp.stack(_kernel_rows([r[j] for j in range(3)])) for r in rows])


def tiles(out_hw: tuple[int, int]) -> tuple[int, int]:
    """Number of 2x2 output tiles along height and width."""
    return (out_hw[0] + 1) // 2, (out_hw[1] + 1) // 2


def conv3x3_winograd(x: jax.Array, kernel: jax.Array, pads: Pads) -> jax.Array:
    """NHWC x HWIO (3, 3, Cin, Cout) stride-1 convolution with explicit padding, by F(2x2, 3x3)."""
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    ho, wo = h + sum(pads[0]) - 2, w + sum(pads[1]) - 2
    th, tw = tiles((ho, wo))
    # pad so that the input holds 2*t + 2 rows and columns (extra zeros give outputs that are cropped)
    extra_h, extra_w = 2 * th + 2 - (h + sum(pads[0])), 2 * tw + 2 - (w + sum(pads[1]))
    xp = jnp.pad(x, ((0, 0), (pads[0][0], pads[0][1] + extra_h), (pads[1][0], pads[1][1] + extra_w), (0, 0)))
    rows = jnp.stack(_input_rows(_tile_slices(xp, 1, th)))  # B^T along rows: (4, n, th, 2tw+2, cin)
    v = jnp.stack(_input_rows(_tile_slices(rows, 3, tw)), axis=1)  # then along columns: (4, 4, n, th, tw, cin)
    v = v.reshape(16, n * th * tw, cin)
    u = transformed_kernel(kernel).reshape(16, cin, cout)
    m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), preferred_element_type=x.dtype)
    m = m.reshape(4, 4, n, th, tw, cout)
    cols = _output_rows([m[i] for i in range(4)])  # A^T along the tile rows: 2 x (4, n, th, tw, cout)
    y = [_output_rows([c[j] for j in range(4)]) for c in cols]  # y[a][b]: output (2t + a, 2t + b)
    y = jnp.stack([jnp.stack(ya, axis=3) for ya in y], axis=2)  # (n, th, 2, tw, 2, cout)
    return y.reshape(n, 2 * th, 2 * tw, cout)[:, :ho, :wo]


def flipped_transposed(kernel: jax.Array) -> jax.Array:
    """The kernel whose stride-1 convolution with the output gradient is the input gradient: rotated 180
    degrees in space, input and output channels swapped."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(x: jax.Array, kernel: jax.Array, pads: Pads, input_grad: str = "winograd") -> jax.Array:
    """:func:`conv3x3_winograd` with XLA's kernel gradient (rather than autodiff through the transforms) and,
    with ``input_grad="winograd"``, an input gradient that is also a forward F(2x2, 3x3) convolution (of the
    output gradient with :func:`flipped_transposed`); ``"xla"``: XLA's input gradient. Both equal ``lax.conv``'s
    gradients (tests/test_winograd.py)."""
    return conv3x3_winograd(x, kernel, pads)


def _conv3x3_forward(x, kernel, pads, input_grad):
    return conv3x3_winograd(x, kernel, pads), (x, kernel)


def _conv3x3_backward(pads, input_grad, residuals, dy):
    x, kernel = residuals

    def xla(x_, k_):
        return jax.lax.conv_general_dilated(x_, k_, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    if input_grad == "winograd":
        grad_pads = tuple((2 - lo, 2 - hi) for lo, hi in pads)
        dx = conv3x3_winograd(dy, flipped_transposed(kernel), grad_pads)
        _, kernel_vjp = jax.vjp(lambda k_: xla(x, k_), kernel)
        (dk,) = kernel_vjp(dy)
    elif input_grad == "xla":
        _, vjp = jax.vjp(xla, x, kernel)
        dx, dk = vjp(dy)
    else:
        raise ValueError(f"input_grad must be 'winograd' or 'xla', got {input_grad!r}")
    return dx, dk


conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)
