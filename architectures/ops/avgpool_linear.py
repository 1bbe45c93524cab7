"""torch's ``AdaptiveAvgPool2d``, ``flatten``, ``Dropout`` and ``Linear`` in a row, as one op (AlexNet's
``avgpool`` and ``classifier[0:2]``).

On the CPU path, when the map is smaller than the pool's output (AlexNet's 1x1 map on 63-94 px inputs, where
torch's first classifier layer multiplies 36 copies of each value) and no dropout is drawn, the pool is folded
into the kernel instead: each channel's 36 kernel rows are combined by the pool's weights, so the product has
H*W rows per channel, up to 36 times fewer multiplications (why: docs/performance.md, "Optimisation log"). The
same linear map, exact up to float rounding (tests/test_alexnet.py). Parameters are ``nn.Dense``'s: ``kernel``
(C*oh*ow, features) in torch's (C, H, W) row order, and ``bias``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from architectures.ops.impl import Impl, resolve
from architectures.ops.layers import adaptive_avg_pool, adaptive_pool_bins, flatten_nchw


def pooling_copies(in_hw: tuple[int, int], out_hw: tuple[int, int] = (6, 6)) -> bool:
    """Whether adaptive average pooling of ``in_hw`` to ``out_hw`` has more outputs than inputs (copies them)."""
    return in_hw[0] * in_hw[1] < out_hw[0] * out_hw[1]


def pooling_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """(out_h*out_w, in_h*in_w) matrix of torch's adaptive average pooling (the bins of
    :func:`architectures.ops.layers.adaptive_pool_bins`, as :func:`adaptive_avg_pool` uses)."""
    (h, w), (oh, ow) = in_hw, out_hw
    m = np.zeros((oh, ow, h, w), np.float32)
    for i, (h0, h1) in enumerate(adaptive_pool_bins(h, oh)):
        for j, (w0, w1) in enumerate(adaptive_pool_bins(w, ow)):
            m[i, j, h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
    return m.reshape(oh * ow, h * w)


class AvgPoolLinear(nn.Module):
    """Adaptive average pool of an NHWC map to ``output_size``, flatten in NCHW order, dropout, ``nn.Dense``."""

    features: int
    output_size: tuple[int, int] = (6, 6)
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    impl: Impl | str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        oh, ow = self.output_size
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (channels * oh * ow, self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        impl = resolve(self.impl)
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")
        if impl.cpu and impl.fold_pooling and pooling_copies(x.shape[1:3], self.output_size) and (
                not train or self.dropout_rate == 0):
            pooling = pooling_matrix(x.shape[1:3], self.output_size)
            # a weighted sum over the oh*ow bins for each of the H*W pixels, as a reduction: XLA's dot for this
            # contraction transposed the whole kernel
            blocks = kernel.reshape(channels, oh * ow, 1, self.features)
            kernel = jnp.sum(blocks * jnp.asarray(pooling[None, :, :, None]), axis=1).reshape(-1, self.features)
        else:
            x = dropout(adaptive_avg_pool(x, self.output_size))
        x = flatten_nchw(x)
        return x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)
