"""torchvision.ops' StochasticDepth and SqueezeExcitation on NHWC, the names and parameters torchvision uses."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.ops.conv import Conv
from architectures.ops.impl import Impl
from architectures.ops.layers import kaiming_normal_fan_out


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth(p, mode="row"): in training each sample's residual branch is dropped
    with probability ``rate`` and the kept ones scaled by 1 / (1 - rate); identity in evaluation or at rate 0.
    The mask is drawn from the ``'dropout'`` rng, one value per sample."""

    rate: float
    deterministic: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        if nn.merge_param("deterministic", self.deterministic, deterministic) or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        if keep == 0.0:
            return jnp.zeros_like(x)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return x * (mask.astype(x.dtype) / keep)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation (Hu et al. 2018): ``x * sigmoid(fc2(act(fc1(mean over H, W of x))))``,
    ``fc1`` and ``fc2`` 1x1 convolutions with biases (kaiming-normal fan-out init, as EfficientNet's)."""

    squeeze_channels: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    dtype: Any = jnp.float32
    impl: Impl | str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda features, name: Conv(features, (1, 1), dtype=self.dtype, kernel_init=kaiming_normal_fan_out,
                                           impl=self.impl, name=name)
        scale = jnp.mean(x, axis=(1, 2), keepdims=True)
        scale = conv(x.shape[-1], "fc2")(self.activation(conv(self.squeeze_channels, "fc1")(scale)))
        return x * jax.nn.sigmoid(scale)
