"""MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
arXiv:1801.04381) in Flax, computing what torchvision's ``MobileNetV2`` computes.

``width_mult`` scales every layer's channels, rounded to a multiple of ``round_nearest`` as
torchvision does. Submodule names follow torchvision's Sequential indices (``features_0_0``,
``features_2/conv_1_0``, ``features_18_1``, ``classifier_1``) so a state_dict converts by rule; the
init is torchvision's (kaiming-normal fan-out convs, BN 1/0, Linear N(0, 0.01), zero biases).

Sown intermediates (``self.sow('intermediates', name, x)``; ``TORCH_STAGES`` maps each to the torch
module whose eval-mode output it equals, ``pooled`` being the output of the dropout ``classifier.0``):
``stem`` (features.0), ``block1`` ... ``block17`` (features.1-17, the inverted residual blocks),
``last_conv`` (features.18), ``pooled``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures import ops
from architectures.registry import ArchSpec, WeightSpec, register

# t (expansion), c (output channels), n (repeats), s (first stride): torchvision's / the paper's table.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# sown intermediate name -> torch module whose eval-mode output it equals (for parity tests)
TORCH_STAGES = {
    "stem": "features.0",
    **{f"block{i}": f"features.{i}" for i in range(1, 18)},
    "last_conv": "features.18",
    "pooled": "classifier.0",
}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``), never going
    more than 10% below ``value``: the channel rounding of the TF/torchvision MobileNets."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, (int(value + divisor / 2) // divisor) * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv(features: int, kernel: int, stride: int, name: str, dtype: Any, impl: Any, groups: int = 1) -> nn.Module:
    """Bias-free conv, padding (kernel - 1) // 2 on each side, kaiming-normal fan-out init."""
    if groups > 1:  # depthwise (groups == channels): torch's Conv2d(groups=C), as ops.DepthwiseConv computes it
        if groups != features:
            raise ValueError(f"only depthwise grouped convs are used here, got groups={groups}, features={features}")
        return ops.DepthwiseConv(
            features,
            (kernel, kernel),
            strides=(stride, stride),
            padding=ops.torch_padding((kernel - 1) // 2),
            use_bias=False,
            kernel_init=ops.kaiming_normal_fan_out,
            dtype=dtype,
            param_dtype=jnp.float32,
            impl=impl,
            name=name,
        )
    return ops.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=ops.torch_padding((kernel - 1) // 2),
        use_bias=False,
        kernel_init=ops.kaiming_normal_fan_out,
        dtype=dtype,
        param_dtype=jnp.float32,
        impl=impl,
        name=name,
    )


def _relu6(x: jax.Array, impl: Any) -> jax.Array:
    """torch's ReLU6, gradient included (1 strictly inside (0, 6)); ``Impl.relu6 == "clip"``: ``jnp.clip``."""
    return jnp.clip(x, 0, 6) if ops.resolve(impl).relu6 == "clip" else jax.nn.relu6(x)


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when t == 1), depthwise 3x3, linear 1x1 project; residual when shapes match."""

    in_channels: int
    out_channels: int
    stride: int
    expand_ratio: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {self.stride}")
        hidden = int(round(self.in_channels * self.expand_ratio))

        def bn(name: str) -> nn.BatchNorm:
            return ops.batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl, name=name)

        y, idx = x, 0
        if self.expand_ratio != 1:
            y = _conv(hidden, 1, 1, "conv_0_0", self.dtype, self.impl)(y)
            y = _relu6(bn("conv_0_1")(y), self.impl)
            idx = 1
        y = _conv(hidden, 3, self.stride, f"conv_{idx}_0", self.dtype, self.impl, groups=hidden)(y)
        y = _relu6(bn(f"conv_{idx}_1")(y), self.impl)
        y = _conv(self.out_channels, 1, 1, f"conv_{idx + 1}", self.dtype, self.impl)(y)
        y = bn(f"conv_{idx + 2}")(y)
        if self.stride == 1 and self.in_channels == self.out_channels:
            return x + y
        return y


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 on NHWC input; returns float32 logits ``(N, num_classes)``."""

    num_classes: int = 1000
    width_mult: float = 1.0
    round_nearest: int = 8
    inverted_residual_setting: Sequence[Sequence[int]] = INVERTED_RESIDUAL_SETTING
    dropout_rate: float = 0.2
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ops.check_input_size(x, 1, "mobilenet_v2")
        if not self.inverted_residual_setting or any(len(row) != 4 for row in self.inverted_residual_setting):
            raise ValueError("inverted_residual_setting must be non-empty rows of (t, c, n, s)")
        x = x.astype(self.dtype)

        def bn(name: str) -> nn.BatchNorm:
            return ops.batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl, name=name)

        channels = make_divisible(32 * self.width_mult, self.round_nearest)
        last_channels = make_divisible(1280 * max(1.0, self.width_mult), self.round_nearest)

        x = _conv(channels, 3, 2, "features_0_0", self.dtype, self.impl)(x)
        x = _relu6(bn("features_0_1")(x), self.impl)
        self.sow("intermediates", "stem", x)

        index = 1
        for t, c, n, s in self.inverted_residual_setting:
            out = make_divisible(c * self.width_mult, self.round_nearest)
            for i in range(n):
                x = InvertedResidual(
                    channels,
                    out,
                    s if i == 0 else 1,
                    t,
                    dtype=self.dtype,
                    bn_axis_name=self.bn_axis_name,
                    impl=self.impl,
                    name=f"features_{index}",
                )(x, train=train)
                self.sow("intermediates", f"block{index}", x)
                channels = out
                index += 1

        x = _conv(last_channels, 1, 1, f"features_{index}_0", self.dtype, self.impl)(x)
        x = _relu6(bn(f"features_{index}_1")(x), self.impl)
        self.sow("intermediates", "last_conv", x)

        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        self.sow("intermediates", "pooled", x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier_0")(x)
        x = nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.normal(0.01),
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="classifier_1",
        )(x)
        return x.astype(jnp.float32)


register(
    ArchSpec(
        name="mobilenet_v2",
        constructor=MobileNetV2,
        input_size=224,
        min_input_size=1,
        torchvision_builder="mobilenet_v2",
        num_params=3504872,
        classifier=("classifier_1",),
        first_conv="features_0_0",
        weights=(
            WeightSpec(
                name="mobilenet_v2.tv_in1k",
                torchvision_enum="MobileNet_V2_Weights.IMAGENET1K_V1",
                file_name="mobilenet_v2-b0353104.pth",
                acc1=71.878,
                num_params=3504872,
            ),
            WeightSpec(
                name="mobilenet_v2.tv2_in1k",
                torchvision_enum="MobileNet_V2_Weights.IMAGENET1K_V2",
                file_name="mobilenet_v2-7ebf99e0.pth",
                acc1=72.154,
                num_params=3504872,
                resize=232,
            ),
        ),
        aliases=("mobilenetv2", "mobilenet"),
        description="MobileNetV2 with width_mult channel scaling (Sandler et al., 2018)",
    )
)
