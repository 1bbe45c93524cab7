"""2-D convolution (``nn.Conv`` without groups), computed as ``impl`` says (:mod:`architectures.ops.impl`).

The reference path is ``lax.conv`` with JAX's own gradients, what GPUs and TPUs run. The CPU path
(``Impl("cpu")``) picks, per convolution, the form XLA:CPU runs best:

- **patches @ kernel** (the k*k shifted, strided slices of the padded input concatenated on the channel axis,
  times the kernel reshaped to (kh*kw*Cin, Cout)) for 1x1 kernels, outputs of at most
  ``Impl.patches_max_output_pixels`` pixels and strided kernels: XLA:CPU's convolution is slow on tiny maps
  (padding as large as the map) and for strided gradients, while products run at the matrix rate;
- ``lax.conv`` for large first-layer kernels on the image's few channels (``Impl.first_layer_max_channels``) and
  for larger stride-1 maps, with the kernel gradient of :func:`kernel_grad_by_shifts` (a custom VJP) when
  convolutions run on YNNPACK, XLA's own when the XLA flags move them off it (``Impl.kernel_grad``, "auto");
- Winograd's F(2x2, 3x3) (:mod:`architectures.ops.winograd`, 16 multiplications instead of 36) for 3x3
  stride-1 convolutions with many channels on maps of 10x10 and more (``Impl.winograd_min_channels``), when
  the kernel gradient is XLA's.

Every form computes the same values and gradients as ``nn.Conv`` (tests/test_conv.py,
tests/test_winograd.py, tests/test_implementations.py). Why each rule: docs/performance.md, "Optimisation log".

:class:`Conv` is a drop-in for ``nn.Conv`` without groups: same parameter names and shapes (``kernel``
(kh, kw, Cin, Cout), optional ``bias``), same init, explicit ``((top, bottom), (left, right))`` padding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.ops import layers, winograd
from architectures.ops.impl import Impl, resolve
from architectures.ops.pooling import window_slice

Pads = tuple[tuple[int, int], tuple[int, int]]


def output_hw(in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads):
    """Output height and width of a convolution with explicit padding (floor, as torch and lax)."""
    return tuple((in_hw[a] + pads[a][0] + pads[a][1] - kernel_hw[a]) // strides[a] + 1 for a in (0, 1))


def first_layer_xla(kernel_hw: tuple[int, int], strides: tuple[int, int], in_channels: int | None, impl: Impl) -> bool:
    """Whether a strided, large-kernel convolution on few channels (a first layer) runs as ``lax.conv``
    (kernel gradient as ``impl.kernel_grad_mode()`` says); the caller has checked ``impl``."""
    return (in_channels is not None and in_channels <= impl.first_layer_max_channels and tuple(strides) != (1, 1)
            and kernel_hw[0] * kernel_hw[1] >= impl.first_layer_min_kernel_pixels)


def uses_patches(in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads,
                 impl: Impl, in_channels: int | None = None) -> bool:
    """Whether :func:`conv_nhwc` computes this convolution as patches @ kernel (see the module doc)."""
    if impl.conv != "auto":
        return impl.conv == "patches"
    if not impl.cpu:
        return False
    if kernel_hw == (1, 1):
        return True
    if first_layer_xla(kernel_hw, strides, in_channels, impl):
        return False
    if impl.patches_for_strided and tuple(strides) != (1, 1):
        return True
    ho, wo = output_hw(in_hw, kernel_hw, strides, pads)
    return ho * wo <= impl.patches_max_output_pixels


def conv_patches(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads) -> jax.Array:
    """NHWC x HWIO convolution as the matrix product of the input's patches with the flattened kernel."""
    kh, kw, cin, cout = kernel.shape
    if strides[0] != strides[1]:
        raise ValueError(f"conv_patches: square strides only, got {strides}")
    if any(p for pair in pads for p in pair):
        x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    ho, wo = output_hw(x.shape[1:3], (kh, kw), strides, ((0, 0), (0, 0)))
    cols = [window_slice(x, i, j, strides[0], (ho, wo)) for i in range(kh) for j in range(kw)]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)  # (N, Ho, Wo, kh*kw*Cin)
    y = patches.reshape(-1, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    return y.reshape(x.shape[0], ho, wo, cout)


def conv_xla(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads) -> jax.Array:
    """The same convolution as XLA's ``conv_general_dilated`` (what ``nn.Conv`` computes)."""
    return jax.lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def images_per_chunk(n: int, pixels_per_image: int, chunk_pixels: int = Impl.kernel_grad_chunk_pixels) -> int:
    """The largest divisor of the batch ``n`` whose images hold at most ``chunk_pixels`` output pixels (at
    least one image)."""
    target = max(1, chunk_pixels // max(1, pixels_per_image))
    return max(d for d in range(1, min(n, target) + 1) if n % d == 0)


def kernel_grad_by_shifts(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int], pads: Pads,
                          strides: tuple[int, int] = (1, 1),
                          chunk_pixels: int = Impl.kernel_grad_chunk_pixels) -> jax.Array:
    """Kernel gradient of an NHWC x HWIO convolution: for each kernel offset (i, j), the shifted (and
    strided) input's transpose times the output gradient, summed over chunks of images by ``lax.scan`` so that
    each chunk's operands stay in cache. Equals XLA's kernel gradient (tests/test_conv.py)."""
    kh, kw = kernel_hw
    sh, sw = strides
    n, cin = x.shape[0], x.shape[-1]
    _, ho, wo, cout = dy.shape
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    chunk = images_per_chunk(n, ho * wo, chunk_pixels)
    xs = xp.reshape(n // chunk, chunk, *xp.shape[1:])
    dys = dy.reshape(n // chunk, chunk * ho * wo, cout)

    def add_chunk(acc, operands):
        xc, dc = operands
        parts = [jax.lax.dot_general(xc[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw].reshape(-1, cin),
                                     dc, (((0,), (0,)), ((), ())),
                                     preferred_element_type=jnp.float32)
                 for i in range(kh) for j in range(kw)]
        return acc + jnp.stack(parts), None

    acc, _ = jax.lax.scan(add_chunk, jnp.zeros((kh * kw, cin, cout), jnp.float32), (xs, dys))
    return acc.reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_xla_shift_grad(x: jax.Array, kernel: jax.Array, pads: Pads, strides: tuple[int, int] = (1, 1),
                        chunk_pixels: int = Impl.kernel_grad_chunk_pixels) -> jax.Array:
    """A ``lax.conv`` whose kernel gradient is :func:`kernel_grad_by_shifts` (input gradient: XLA's)."""
    return conv_xla(x, kernel, strides, pads)


def _shift_grad_forward(x, kernel, pads, strides, chunk_pixels):
    return conv_xla(x, kernel, strides, pads), (x, kernel)


def _shift_grad_backward(pads, strides, chunk_pixels, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: conv_xla(x_, kernel, strides, pads), x)
    (dx,) = input_vjp(dy)
    return dx, kernel_grad_by_shifts(x, dy, kernel.shape[:2], pads, strides, chunk_pixels).astype(kernel.dtype)


conv_xla_shift_grad.defvjp(_shift_grad_forward, _shift_grad_backward)


def uses_shift_grad(strides: tuple[int, int], impl: Impl, kernel_hw: tuple[int, int] | None = None,
                    in_channels: int | None = None) -> bool:
    """Whether a convolution left to ``lax.conv`` takes its kernel gradient from kernel_grad_by_shifts:
    stride-1 ones, and the large first layers of :func:`first_layer_xla` (given kernel size and channels)."""
    if impl.conv != "auto" or not impl.cpu or impl.kernel_grad_mode() != "shifts":
        return False
    return tuple(strides) == (1, 1) or (kernel_hw is not None and first_layer_xla(kernel_hw, strides, in_channels, impl))


def uses_winograd(in_hw: tuple[int, int], kernel_shape: tuple[int, ...], strides: tuple[int, int], pads: Pads,
                  impl: Impl) -> bool:
    """Whether a convolution that does not use patches runs by :func:`architectures.ops.winograd.conv3x3`: on the
    CPU path, 3x3 stride 1, padding of at most 2, ``impl.winograd_min_channels`` channels in and out and
    ``impl.winograd_min_output_pixels`` output pixels."""
    if impl.conv != "auto" or impl.winograd_min_channels is None or not impl.cpu:
        return False
    if impl.kernel_grad_mode() != "xla":  # its kernel gradient is XLA's, which is slow when convolutions run on YNNPACK
        return False
    kh, kw, cin, cout = kernel_shape
    if (kh, kw) != (3, 3) or tuple(strides) != (1, 1) or not all(0 <= p <= 2 for pair in pads for p in pair):
        return False
    ho, wo = output_hw(in_hw, (3, 3), (1, 1), pads)
    return min(cin, cout) >= impl.winograd_min_channels and ho * wo >= impl.winograd_min_output_pixels


def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads,
              impl: Impl | str | None = None) -> jax.Array:
    """Convolution of NHWC ``x`` with an HWIO ``kernel``, by patches, Winograd or ``lax.conv`` (module doc)."""
    impl = resolve(impl)
    if uses_patches(x.shape[1:3], kernel.shape[:2], strides, pads, impl, in_channels=x.shape[-1]):
        return conv_patches(x, kernel, strides, pads)
    if uses_winograd(x.shape[1:3], kernel.shape, strides, pads, impl):
        return winograd.conv3x3(x, kernel, tuple(map(tuple, pads)))
    if uses_shift_grad(strides, impl, kernel.shape[:2], x.shape[-1]):
        return conv_xla_shift_grad(x, kernel, tuple(map(tuple, pads)), tuple(strides), impl.kernel_grad_chunk_pixels)
    return conv_xla(x, kernel, strides, pads)


class ConvAttributes(nn.Module):
    """The attributes ``nn.Conv`` takes (no groups), shared by :class:`Conv` and ``DepthwiseConv``, plus
    the bias step both end with; subclasses write ``__call__``."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Pads = ((0, 0), (0, 0))
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    impl: Impl | str | None = None  # architectures.ops.impl: None is the backend's default

    def add_bias(self, y: jax.Array, dtype: Any) -> jax.Array:
        """``y + bias`` (a ``bias`` parameter of ``features`` entries) when ``use_bias``, else ``y``."""
        if not self.use_bias:
            return y
        return y + self.param("bias", self.bias_init, (self.features,), self.param_dtype).astype(dtype)


class Conv(ConvAttributes):
    """``nn.Conv(features, kernel_size, strides, padding)`` (no groups) on NHWC, computed as ``impl`` says."""

    @nn.compact
    def __call__(self, x: jax.Array, *, before_bias: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
        """The convolution of ``x``. ``before_bias``: a map applied before the bias is added, one that commutes
        with adding a per-channel constant (a max pool: :func:`conv_relu_max_pool`)."""
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, kernel)
        y = conv_nhwc(x.astype(dtype), kernel.astype(dtype), tuple(self.strides), tuple(map(tuple, self.padding)),
                      self.impl)
        if before_bias is not None:
            y = before_bias(y)
        return self.add_bias(y, dtype)


def conv_relu_max_pool(conv: Conv, x: jax.Array, window: int, stride: int, padding: int = 0,
                       ceil_mode: bool = False) -> jax.Array:
    """torch's Conv2d, ReLU and MaxPool2d in a row, computed as ``relu(max_pool(conv without bias) + bias)``.

    A max pool commutes with adding a per-channel constant and with the ReLU (rounding is monotone, so the
    values are exactly torch's), so the bias and the ReLU run on the pooled map, a quarter of the
    convolution's output at stride 2, and the full-size map is the product's own output, read only by the
    pool and its gradient. The gradient goes to each window's first maximum of the bias-free output, which is
    torch's element unless adding the bias rounds two different values of a window to the same float (then
    both are maxima to within one rounding; tests/test_benchmark_pooling.py).
    """
    impl = resolve(conv.impl)
    if not (impl.cpu and impl.bias_after_pool and impl.pool_before_relu):
        return layers.relu_max_pool(conv(x), window, stride, padding, ceil_mode, impl=impl)
    pool = functools.partial(layers.max_pool, window=window, stride=stride, padding=padding, ceil_mode=ceil_mode,
                             impl=impl)
    return jax.nn.relu(conv(x, before_bias=pool))
