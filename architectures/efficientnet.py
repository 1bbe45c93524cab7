"""EfficientNet-B0 (Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
ICML 2019, arXiv:1905.11946) as torchvision builds it: MBConv blocks (1x1 expansion, depthwise conv,
squeeze-and-excitation, linear 1x1 projection, residual with stochastic depth), SiLU activations.

Names follow torchvision's ``features`` Sequential (``features_0_0`` the stem conv, ``features_2_1/block_1_0``
the depthwise conv of stage 2's second block, ``block_2/fc1`` its squeeze-and-excitation) and ``classifier_1``, so a
torchvision state_dict converts by the generic rule. Sown intermediates: ``features.0`` .. ``features.8`` and
``avgpool``, each the output of the torchvision module of that dotted name (NHWC here).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures import ops
from architectures.ops.regularisation import SqueezeExcitation, StochasticDepth
from architectures.registry import ArchSpec, WeightSpec, register

# expand ratio, kernel, first stride, input channels, output channels, layers: the paper's Table 1 (B0)
STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
TORCH_STAGES = {**{f"features.{i}": f"features.{i}" for i in range(9)}, "avgpool": "avgpool"}


def conv_norm_activation(x: jax.Array, features: int, kernel: int, stride: int, name: str, *, train: bool,
                         depthwise: bool = False, activation: bool = True, dtype: Any = jnp.float32,
                         bn_axis_name: str | None = None, impl: Any = None) -> jax.Array:
    """torchvision's Conv2dNormActivation, inside the calling module: bias-free conv ``<name>_0`` with padding
    (kernel - 1) // 2 (depthwise if asked), BatchNorm ``<name>_1``, then SiLU unless ``activation`` is False."""
    conv = ops.DepthwiseConv if depthwise else ops.Conv
    x = conv(features, (kernel, kernel), strides=(stride, stride), padding=ops.torch_padding((kernel - 1) // 2),
             use_bias=False, dtype=dtype, kernel_init=ops.kaiming_normal_fan_out, impl=impl, name=f"{name}_0")(x)
    x = ops.batch_norm(train, axis_name=bn_axis_name, dtype=dtype, impl=impl, name=f"{name}_1")(x)
    return nn.silu(x) if activation else x


class MBConv(nn.Module):
    """Inverted residual block with squeeze-and-excitation (torchvision's ``MBConv``), its layers ``block_<i>``."""

    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    stochastic_depth_rate: float
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        in_channels = x.shape[-1]
        expanded = in_channels * self.expand_ratio
        layer = dict(train=train, dtype=self.dtype, bn_axis_name=self.bn_axis_name, impl=self.impl)
        index, y = 0, x
        if expanded != in_channels:  # 1x1 expansion
            y = conv_norm_activation(y, expanded, 1, 1, "block_0", **layer)
            index = 1
        y = conv_norm_activation(y, expanded, self.kernel, self.stride, f"block_{index}", depthwise=True, **layer)
        y = SqueezeExcitation(max(1, in_channels // 4), nn.silu, dtype=self.dtype, impl=self.impl,
                              name=f"block_{index + 1}")(y)
        y = conv_norm_activation(y, self.out_channels, 1, 1, f"block_{index + 2}", activation=False, **layer)
        if self.stride == 1 and in_channels == self.out_channels:
            y = StochasticDepth(self.stochastic_depth_rate, deterministic=not train, name="stochastic_depth")(y)
            y = y + x
        return y


class EfficientNet(nn.Module):
    """torchvision's EfficientNet-B0: NHWC input, float32 logits (N, num_classes)."""

    num_classes: int = 1000
    dropout_rate: float = 0.2
    stochastic_depth_prob: float = 0.2  # the last block's; block i of n drops with prob * i / n
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ops.check_input_size(x, 1, "efficientnet_b0")
        layer = dict(train=train, dtype=self.dtype, bn_axis_name=self.bn_axis_name, impl=self.impl)
        x = conv_norm_activation(x.astype(self.dtype), STAGES[0][3], 3, 2, "features_0", **layer)
        self.sow("intermediates", "features.0", x)
        total, block = sum(stage[-1] for stage in STAGES), 0
        for stage, (expand, kernel, stride, _, out, layers) in enumerate(STAGES, start=1):
            for i in range(layers):
                x = MBConv(expand, kernel, stride if i == 0 else 1, out, self.stochastic_depth_prob * block / total,
                           dtype=self.dtype, bn_axis_name=self.bn_axis_name, impl=self.impl,
                           name=f"features_{stage}_{i}")(x, train=train)
                block += 1
            self.sow("intermediates", f"features.{stage}", x)
        x = conv_norm_activation(x, 4 * STAGES[-1][4], 1, 1, "features_8", **layer)
        self.sow("intermediates", "features.8", x)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True)
        self.sow("intermediates", "avgpool", x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier_0")(x.reshape(x.shape[0], -1))
        bound = 1.0 / math.sqrt(self.num_classes)  # torchvision: U(-1/sqrt(out), 1/sqrt(out)), bias 0
        x = nn.Dense(self.num_classes, dtype=self.dtype,
                     kernel_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound),
                     name="classifier_1")(x.astype(self.dtype))
        return x.astype(jnp.float32)


register(
    ArchSpec(
        name="efficientnet_b0",
        constructor=EfficientNet,
        input_size=224,
        min_input_size=1,
        torchvision_builder="efficientnet_b0",
        num_params=5_288_548,
        classifier=("classifier_1",),
        first_conv="features_0_0",
        weights=(
            WeightSpec(
                name="efficientnet_b0.tv_in1k",
                torchvision_enum="EfficientNet_B0_Weights.IMAGENET1K_V1",
                file_name="efficientnet_b0_rwightman-7f5810bc.pth",
                acc1=77.692,
                num_params=5_288_548,
                resize=256,
                crop=224,
                interpolation="bicubic",
            ),
        ),
        aliases=("efficientnet",),
        description="EfficientNet-B0 (Tan and Le, 2019): MBConv blocks with squeeze-and-excitation, SiLU.",
    )
)
