"""SqueezeNet 1.0 and 1.1 (Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size", arXiv:1602.07360), as torchvision builds them; 1.1 is from the official repository (2.4x
less computation, same accuracy). The study used MATLAB's ``squeezenet``, v1.1 at 227x227: hence the alias
``squeezenet`` and the default size 227.

Names follow torchvision's ``features`` and ``classifier`` Sequentials (``features_3/squeeze``,
``classifier_1``). Sown intermediates: ``features.2`` .. ``features.12`` and ``classifier``, each the output of
the torchvision module of that dotted name (NHWC here), for the parity tests.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures import ops
from architectures.registry import ArchSpec, WeightSpec, register

# torchvision's init: kaiming_uniform_ (gain sqrt(2), fan_in), the final conv N(0, 0.01), biases 0
kaiming_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
final_conv_init = nn.initializers.normal(stddev=0.01)

# features after the stem (conv, ReLU, 3x3/2 max pool at indices 0-2): "pool" or a Fire module's
# (squeeze, expand1x1, expand3x3) planes, at indices 3, 4, ...
FEATURES = {
    "1_0": ((96, 7), ((16, 64, 64), (16, 64, 64), (32, 128, 128), "pool", (32, 128, 128), (48, 192, 192),
                      (48, 192, 192), (64, 256, 256), "pool", (64, 256, 256))),
    "1_1": ((64, 3), ((16, 64, 64), (16, 64, 64), "pool", (32, 128, 128), (32, 128, 128), "pool",
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))),
}
MIN_INPUT_SIZE = {"1_0": 21, "1_1": 17}
TORCH_STAGES = {**{f"features.{i}": f"features.{i}" for i in range(2, 13)}, "classifier": "classifier"}


class Fire(nn.Module):
    """1x1 ``squeeze`` conv and ReLU, then ``expand1x1`` and ``expand3x3`` convs with ReLUs, concatenated."""

    squeeze_planes: int
    expand1x1_planes: int
    expand3x3_planes: int
    dtype: Any = jnp.float32
    impl: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(ops.Conv, dtype=self.dtype, kernel_init=kaiming_uniform, impl=self.impl)
        x = nn.relu(conv(self.squeeze_planes, (1, 1), name="squeeze")(x))
        e1 = nn.relu(conv(self.expand1x1_planes, (1, 1), name="expand1x1")(x))
        e3 = nn.relu(conv(self.expand3x3_planes, (3, 3), padding=ops.torch_padding(1), name="expand3x3")(x))
        return jnp.concatenate([e1, e3], axis=-1)


class SqueezeNet(nn.Module):
    """torchvision's SqueezeNet (``version`` "1_0" or "1_1"): NHWC input, float32 logits (N, num_classes)."""

    version: str = "1_1"
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # no BatchNorm here; kept for the common module contract
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.version not in FEATURES:
            raise ValueError(f"unsupported SqueezeNet version {self.version!r}: '1_0' or '1_1' expected")
        ops.check_input_size(x, MIN_INPUT_SIZE[self.version], f"squeezenet{self.version}")
        (stem_planes, stem_kernel), layers = FEATURES[self.version]
        x = x.astype(self.dtype)
        stem = ops.Conv(stem_planes, (stem_kernel, stem_kernel), strides=(2, 2), dtype=self.dtype,
                        kernel_init=kaiming_uniform, impl=self.impl, name="features_0")
        x = ops.conv_relu_max_pool(stem, x, 3, 2, ceil_mode=True)  # features.0-2: conv, ReLU, max pool
        self.sow("intermediates", "features.2", x)
        for i, layer in enumerate(layers, start=3):
            if layer == "pool":
                x = ops.max_pool(x, 3, 2, ceil_mode=True, impl=self.impl)
            else:
                x = Fire(*layer, dtype=self.dtype, impl=self.impl, name=f"features_{i}")(x)
            self.sow("intermediates", f"features.{i}", x)

        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier_0")(x)
        x = ops.Conv(self.num_classes, (1, 1), dtype=self.dtype, kernel_init=final_conv_init, impl=self.impl,
                     name="classifier_1")(x)
        x = ops.adaptive_avg_pool(nn.relu(x).astype(jnp.float32), 1)
        self.sow("intermediates", "classifier", x)
        return x.reshape(x.shape[0], -1)


def _register(version: str, file_name: str, acc1: float, num_params: int, **extra: Any) -> None:
    register(ArchSpec(
        name=f"squeezenet{version}", constructor=functools.partial(SqueezeNet, version=version),
        input_size=227, min_input_size=MIN_INPUT_SIZE[version], torchvision_builder=f"squeezenet{version}",
        num_params=num_params, classifier=("classifier_1",), first_conv="features_0",
        weights=(WeightSpec(name=f"squeezenet{version}.tv_in1k", torchvision_enum=f"SqueezeNet{version}_Weights.IMAGENET1K_V1",
                            file_name=file_name, acc1=acc1, num_params=num_params),),
        **extra,
    ))


_register("1_0", "squeezenet1_0-b66bff10.pth", 58.092, 1_248_424,
          description="SqueezeNet 1.0 (Iandola et al. 2016): Fire modules, no BatchNorm, 1x1 conv classifier.")
_register("1_1", "squeezenet1_1-b8a52dc0.pth", 58.178, 1_235_496, aliases=("squeezenet",),
          description="SqueezeNet 1.1 (the study's MATLAB squeezenet, 227x227): 2.4x cheaper than 1.0.")
