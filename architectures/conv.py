"""2-D convolution that XLA's CPU backend runs fast: small and 1x1 convolutions as matrix products.

XLA:CPU sends ``lax.conv`` to one library routine whatever the shape, and two shapes these networks
meet all the time on 24x40 module images are slow there: a 3x3 convolution on a tiny feature map (a
ResNet-50 layer4 conv on a 2x2 map, 32 x 512 -> 512, took 285 ms against 4 ms in torch, and its
gradient 630 ms: the padding is as large as the map), and the gradient of any strided convolution.
1x1 convolutions are plain matrix products, which XLA runs faster as ``dot`` than as ``conv`` (fwd and
bwd, measured at every size these networks use).

So on the CPU backend :class:`Conv` computes the convolution as ``patches @ kernel``: the k*k shifted,
strided slices of the padded input concatenated on the channel axis, times the kernel reshaped to
(kh*kw*Cin, Cout); JAX differentiates that into matrix products and pads. It does so for 1x1 kernels,
for outputs of at most :data:`PATCHES_MAX_OUTPUT_PIXELS` pixels and for strided kernels (except large
first-layer kernels on the image's few channels, :data:`FIRST_LAYER_MAX_CHANNELS`); larger stride-1
maps keep ``lax.conv``, which is faster there forward and for the input gradient. Their kernel gradient
depends on where XLA:CPU runs convolutions: on YNNPACK (jax 0.10's default) XLA's kernel gradient is
1.2-6x slower than :func:`kernel_grad_by_shifts` (row 13 of docs/performance.md, a custom VJP), which they
then use; on XLA's own CPU path (``hotspot_jax``'s default XLA flag, row 25) XLA's is 1.1-2.2x faster
(row 26), so they keep it (:data:`KERNEL_GRAD`). Of those, 3x3 ones with many channels on maps of 10x10 and
more run forward and for their input gradient by Winograd's F(2x2, 3x3) (:mod:`architectures.winograd`, 2.25x
fewer multiplications; :data:`WINOGRAD_MIN_CHANNELS`, row 42). Other backends
(GPU: cuDNN) always use ``lax.conv`` and its own gradients. The measurements behind the rules are in
docs/performance.md.

:class:`Conv` is a drop-in for ``nn.Conv`` without groups: same parameter names and shapes (``kernel``
(kh, kw, Cin, Cout), optional ``bias``), same init, explicit ``((top, bottom), (left, right))`` padding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures import backend, layers, winograd
from architectures.layers import Parts, as_parts
from architectures.pooling import window_slice
from hotspot_jax import xla_flags

Pads = tuple[tuple[int, int], tuple[int, int]]

#: outputs with at most this many pixels per image use patches for any kernel (measured: a 4x4 output
#: map was as fast or faster than lax.conv for the gradient, an 8x8 map no faster)
PATCHES_MAX_OUTPUT_PIXELS = 16
#: strided kernels use patches at any size (their lax.conv gradient is slow on the CPU)
PATCHES_FOR_STRIDED = True
#: the kernel gradient of convolutions left to lax.conv on the CPU: "shifts" (kernel_grad_by_shifts, row 13
#: of docs/performance.md), "xla" (XLA's own), or "auto": "xla" when XLA_FLAGS takes convolutions off
#: YNNPACK (hotspot_jax's default, row 25; there XLA's was 1.1-2.2x faster per layer, row 26), else "shifts"
KERNEL_GRAD = "auto"
#: kernel_grad_by_shifts sums over the batch in chunks of about this many output pixels (a 56x56 map per
#: chunk measured fastest among 1 and 4 images; smaller maps take several images per chunk)
KERNEL_GRAD_CHUNK_PIXELS = 3136
#: strided convolutions of at most this many input channels and kernels of at least
#: FIRST_LAYER_MIN_KERNEL_PIXELS (a network's 7x7 or 11x11 first layer on the image) keep lax.conv forward
#: (kernel gradient per KERNEL_GRAD) instead of patches, whose k*k-wide matrix costs more than the product there
#: (docs/performance.md row 15: AlexNet at 224 px 1.04x train, 1.18x inference; 3x3 first layers were
#: neutral to 0.92x, so they stay patches); 0 turns it off (the A/B switch)
FIRST_LAYER_MAX_CHANNELS = 4
FIRST_LAYER_MIN_KERNEL_PIXELS = 25
#: stride-1 3x3 convolutions left to lax.conv with at least WINOGRAD_MIN_CHANNELS input and output channels and
#: WINOGRAD_MIN_OUTPUT_PIXELS output pixels run forward and for their input gradient by Winograd's F(2x2, 3x3)
#: (:mod:`architectures.winograd`, row 42 of docs/performance.md: 2.25x fewer multiplications; per layer,
#: forward with both gradients, 1.07-1.37x faster than XLA's on 13x13 to 28x28 maps; slower at 64 channels,
#: on an 8x8 map of 128 and at 7x7, where a quarter of the tiles' outputs are cropped). Kernel gradient XLA's.
#: None turns it off (the A/B switch)
WINOGRAD_MIN_CHANNELS: int | None = 112
WINOGRAD_MIN_OUTPUT_PIXELS = 100
#: "auto" (patches where the rule above says so, on the CPU backend only), "xla" (always lax.conv),
#: "patches" (always patches): a switch for the A/B benchmark and the tests
IMPL = "auto"
#: :func:`conv_relu_max_pool` pools the convolution before its bias is added, and adds the bias and applies the
#: ReLU on the pooled map (row 43 of docs/performance.md); False: bias and ReLU on the full-size map, then the
#: pool (the A/B switch)
BIAS_AFTER_POOL = True


def output_hw(in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads):
    """Output height and width of a convolution with explicit padding (floor, as torch and lax)."""
    return tuple((in_hw[a] + pads[a][0] + pads[a][1] - kernel_hw[a]) // strides[a] + 1 for a in (0, 1))


def kernel_grad_mode() -> str:
    """``"shifts"`` or ``"xla"``: :data:`KERNEL_GRAD`, with ``"auto"`` resolved from this process's XLA flags."""
    if KERNEL_GRAD != "auto":
        return KERNEL_GRAD
    return "xla" if xla_flags.convolutions_off_ynnpack() else "shifts"


def first_layer_xla(kernel_hw: tuple[int, int], strides: tuple[int, int], in_channels: int | None) -> bool:
    """Whether a strided, large-kernel convolution on few channels (a first layer) runs as ``lax.conv``
    (kernel gradient as :func:`kernel_grad_mode` says); the caller has checked backend and ``IMPL``."""
    return (in_channels is not None and in_channels <= FIRST_LAYER_MAX_CHANNELS and tuple(strides) != (1, 1)
            and kernel_hw[0] * kernel_hw[1] >= FIRST_LAYER_MIN_KERNEL_PIXELS)


def uses_patches(in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads,
                 impl: str | None = None, in_channels: int | None = None) -> bool:
    """Whether :func:`conv_nhwc` computes this convolution as patches @ kernel (see the module doc)."""
    impl = impl or IMPL
    if impl != "auto":
        return impl == "patches"
    if not backend.cpu_fast_path():
        return False
    if kernel_hw == (1, 1):
        return True
    if first_layer_xla(kernel_hw, strides, in_channels):
        return False
    if PATCHES_FOR_STRIDED and strides != (1, 1):
        return True
    ho, wo = output_hw(in_hw, kernel_hw, strides, pads)
    return ho * wo <= PATCHES_MAX_OUTPUT_PIXELS


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


def images_per_chunk(n: int, pixels_per_image: int) -> int:
    """The largest divisor of the batch ``n`` whose images hold at most KERNEL_GRAD_CHUNK_PIXELS output
    pixels (at least one image)."""
    target = max(1, KERNEL_GRAD_CHUNK_PIXELS // max(1, pixels_per_image))
    return max(d for d in range(1, min(n, target) + 1) if n % d == 0)


def kernel_grad_by_shifts(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int], pads: Pads,
                          strides: tuple[int, int] = (1, 1)) -> jax.Array:
    """Kernel gradient of an NHWC x HWIO convolution: for each kernel offset (i, j), the shifted (and
    strided) input's transpose times the output gradient, summed over chunks of images by ``lax.scan`` so that
    each chunk's operands stay in cache (XLA:CPU's own kernel gradient is a slow generic loop)."""
    kh, kw = kernel_hw
    sh, sw = strides
    n, cin = x.shape[0], x.shape[-1]
    _, ho, wo, cout = dy.shape
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    chunk = images_per_chunk(n, ho * wo)
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_xla_shift_grad(x: jax.Array, kernel: jax.Array, pads: Pads, strides: tuple[int, int] = (1, 1)) -> jax.Array:
    """A ``lax.conv`` whose kernel gradient is :func:`kernel_grad_by_shifts` (input gradient: XLA's)."""
    return conv_xla(x, kernel, strides, pads)


def _shift_grad_forward(x, kernel, pads, strides):
    return conv_xla(x, kernel, strides, pads), (x, kernel)


def _shift_grad_backward(pads, strides, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: conv_xla(x_, kernel, strides, pads), x)
    (dx,) = input_vjp(dy)
    return dx, kernel_grad_by_shifts(x, dy, kernel.shape[:2], pads, strides).astype(kernel.dtype)


conv_xla_shift_grad.defvjp(_shift_grad_forward, _shift_grad_backward)


def uses_shift_grad(strides: tuple[int, int], impl: str | None = None, kernel_hw: tuple[int, int] | None = None,
                    in_channels: int | None = None) -> bool:
    """Whether a convolution left to ``lax.conv`` takes its kernel gradient from kernel_grad_by_shifts:
    stride-1 ones, and the large first layers of :func:`first_layer_xla` (given kernel size and channels)."""
    if (impl or IMPL) != "auto" or not backend.cpu_fast_path() or kernel_grad_mode() != "shifts":
        return False
    return tuple(strides) == (1, 1) or (kernel_hw is not None and first_layer_xla(kernel_hw, strides, in_channels))


def uses_winograd(in_hw: tuple[int, int], kernel_shape: tuple[int, ...], strides: tuple[int, int], pads: Pads,
                  impl: str | None = None) -> bool:
    """Whether a convolution that does not use patches runs by :func:`architectures.winograd.conv3x3`: on the
    CPU backend, 3x3 stride 1, padding of at most 2, :data:`WINOGRAD_MIN_CHANNELS` channels in and out and
    :data:`WINOGRAD_MIN_OUTPUT_PIXELS` output pixels."""
    if (impl or IMPL) != "auto" or WINOGRAD_MIN_CHANNELS is None or not backend.cpu_fast_path():
        return False
    if kernel_grad_mode() != "xla":  # its kernel gradient is XLA's, which is slow when convolutions run on YNNPACK
        return False
    kh, kw, cin, cout = kernel_shape
    if (kh, kw) != (3, 3) or tuple(strides) != (1, 1) or not all(0 <= p <= 2 for pair in pads for p in pair):
        return False
    ho, wo = output_hw(in_hw, (3, 3), (1, 1), pads)
    return min(cin, cout) >= WINOGRAD_MIN_CHANNELS and ho * wo >= WINOGRAD_MIN_OUTPUT_PIXELS


def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads,
              impl: str | None = None) -> jax.Array:
    """Convolution of NHWC ``x`` with an HWIO ``kernel``, by patches, Winograd or ``lax.conv`` (module doc)."""
    if uses_patches(x.shape[1:3], kernel.shape[:2], strides, pads, impl, in_channels=x.shape[-1]):
        return conv_patches(x, kernel, strides, pads)
    if uses_winograd(x.shape[1:3], kernel.shape, strides, pads, impl):
        return winograd.conv3x3(x, kernel, tuple(map(tuple, pads)))
    if uses_shift_grad(strides, impl, kernel.shape[:2], x.shape[-1]):
        return conv_xla_shift_grad(x, kernel, tuple(map(tuple, pads)), tuple(strides))
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

    def add_bias(self, y: jax.Array, dtype: Any) -> jax.Array:
        """``y + bias`` (a ``bias`` parameter of ``features`` entries) when ``use_bias``, else ``y``."""
        if not self.use_bias:
            return y
        return y + self.param("bias", self.bias_init, (self.features,), self.param_dtype).astype(dtype)


def conv_channel_parts(parts: Parts, kernel: jax.Array, strides: tuple[int, int], pads: Pads) -> jax.Array:
    """The convolution of the channel-wise concatenation of ``parts``, as the sum of each part's convolution
    with its slice of the kernel's input channels (a convolution is linear in its input channels), so that
    the concatenation is never stored (SqueezeNet's Fire outputs, row 40 of docs/performance.md)."""
    y, start = None, 0
    for part in parts:
        c = part.shape[-1]
        term = conv_nhwc(part, kernel[:, :, start:start + c] if len(parts) > 1 else kernel, strides, pads)
        y, start = term if y is None else y + term, start + c
    return y


class Conv(ConvAttributes):
    """``nn.Conv(features, kernel_size, strides, padding)`` (no groups) on NHWC, fast on the CPU. The input may
    also be a tuple of channel parts, meaning their concatenation on the channel axis (:func:`conv_channel_parts`)."""

    @nn.compact
    def __call__(self, x: jax.Array | Parts, *, kernel_only: bool = False,
                 before_bias: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
        """The convolution of ``x``; with ``kernel_only`` just the kernel for ``x``'s channels (cast to the
        compute dtype), for callers that fuse several convolutions of one input into one (GoogLeNet).
        ``before_bias``: a map applied to the convolution before the bias is added, one that commutes with
        adding a per-channel constant (a max pool: :func:`conv_relu_max_pool`)."""
        parts = as_parts(x)
        kh, kw = self.kernel_size
        cin = sum(part.shape[-1] for part in parts)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features), self.param_dtype)
        dtype = self.dtype or jnp.result_type(parts[0], kernel)
        if kernel_only:
            return kernel.astype(dtype)
        y = conv_channel_parts(tuple(part.astype(dtype) for part in parts), kernel.astype(dtype),
                               tuple(self.strides), tuple(map(tuple, self.padding)))  # one part: conv_nhwc
        if before_bias is not None:
            y = before_bias(y)
        return self.add_bias(y, dtype)


def conv_relu_max_pool(conv: Conv, x: jax.Array | Parts, window: int, stride: int, padding: int = 0,
                       ceil_mode: bool = False) -> jax.Array:
    """torch's Conv2d, ReLU and MaxPool2d in a row, computed as ``relu(max_pool(conv without bias) + bias)``.

    A max pool commutes with adding a per-channel constant and with the ReLU (rounding is monotone, so the
    values are exactly torch's), so the bias and the ReLU run on the pooled map, a quarter of the
    convolution's output at stride 2, and the full-size map is the product's own output, read only by the
    pool and its gradient (row 43 of docs/performance.md). The gradient goes to each window's first maximum
    of the bias-free output, which is torch's element unless adding the bias rounds two different values of a
    window to the same float (then both are maxima to within one rounding).
    """
    if not (BIAS_AFTER_POOL and layers.POOL_BEFORE_RELU and backend.cpu_fast_path()):
        return layers.relu_max_pool(conv(x), window, stride, padding, ceil_mode)
    pool = functools.partial(layers.max_pool, window=window, stride=stride, padding=padding, ceil_mode=ceil_mode)
    return jax.nn.relu(conv(x, before_bias=pool))
