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
for outputs of at most :data:`PATCHES_MAX_OUTPUT_PIXELS` pixels and for strided kernels; larger stride-1
maps keep ``lax.conv``, which is faster there. Other backends (GPU: cuDNN) always use ``lax.conv``.
The measurements behind the rule are in docs/performance.md.

:class:`Conv` is a drop-in for ``nn.Conv`` without groups: same parameter names and shapes (``kernel``
(kh, kw, Cin, Cout), optional ``bias``), same init, explicit ``((top, bottom), (left, right))`` padding.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.pooling import window_slice

Pads = tuple[tuple[int, int], tuple[int, int]]

#: outputs with at most this many pixels per image use patches for any kernel (measured: a 4x4 output
#: map was as fast or faster than lax.conv for the gradient, an 8x8 map no faster)
PATCHES_MAX_OUTPUT_PIXELS = 16
#: strided kernels use patches at any size (their lax.conv gradient is slow on the CPU)
PATCHES_FOR_STRIDED = True
#: "auto" (patches where the rule above says so, on the CPU backend only), "xla" (always lax.conv),
#: "patches" (always patches): a switch for the A/B benchmark and the tests
IMPL = "auto"


def output_hw(in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads):
    """Output height and width of a convolution with explicit padding (floor, as torch and lax)."""
    return tuple((in_hw[a] + pads[a][0] + pads[a][1] - kernel_hw[a]) // strides[a] + 1 for a in (0, 1))


def uses_patches(in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides: tuple[int, int], pads: Pads,
                 impl: str | None = None) -> bool:
    """Whether :func:`conv_nhwc` computes this convolution as patches @ kernel (see the module doc)."""
    impl = impl or IMPL
    if impl != "auto":
        return impl == "patches"
    if jax.default_backend() != "cpu":
        return False
    if kernel_hw == (1, 1):
        return True
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


def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads,
              impl: str | None = None) -> jax.Array:
    """Convolution of NHWC ``x`` with an HWIO ``kernel``, by patches or by ``lax.conv`` (module doc)."""
    if uses_patches(x.shape[1:3], kernel.shape[:2], strides, pads, impl):
        return conv_patches(x, kernel, strides, pads)
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


class Conv(ConvAttributes):
    """``nn.Conv(features, kernel_size, strides, padding)`` (no groups) on NHWC, fast on the CPU."""

    @nn.compact
    def __call__(self, x: jax.Array, *, kernel_only: bool = False) -> jax.Array:
        """The convolution of ``x``; with ``kernel_only`` just the kernel for ``x``'s channels (cast to the
        compute dtype), for callers that fuse several convolutions of one input into one (GoogLeNet)."""
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, kernel)
        if kernel_only:
            return kernel.astype(dtype)
        y = conv_nhwc(x.astype(dtype), kernel.astype(dtype), tuple(self.strides), tuple(map(tuple, self.padding)))
        return self.add_bias(y, dtype)
