"""ResNet-18/34/50/101/152 (He et al., 2016) as torchvision builds them, in Flax.

Bottleneck blocks are torchvision's "v1.5": the stride sits in the 3x3 conv, not the first 1x1.
Submodule names follow torchvision (``conv1``, ``bn1``, ``layer1_0/conv2``, ``layer2_0/downsample_1``,
``fc``), so torchvision state_dicts convert by the generic rule. Stages sown as intermediates:
``stem`` (after the max pool), ``layer1`` .. ``layer4``, ``pooled`` (global average, (N, C)).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures import ops
from architectures.registry import ArchSpec, WeightSpec, register


def _conv(features: int, kernel: int, stride: int, padding: int, dtype: Any, name: str, impl: Any) -> ops.Conv:
    """A bias-free conv with torch padding and torchvision's kaiming-normal (fan_out) init."""
    return ops.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=ops.torch_padding(padding),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=ops.kaiming_normal_fan_out,
        impl=impl,
        name=name,
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        bn = dict(axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        identity = x
        y = _conv(self.planes, 3, self.stride, 1, self.dtype, "conv1", self.impl)(x)
        y = ops.materialised_relu(ops.batch_norm(train, name="bn1", **bn)(y), impl=self.impl)
        y = _conv(self.planes, 3, 1, 1, self.dtype, "conv2", self.impl)(y)
        y = ops.batch_norm(train, name="bn2", scale_init=last_scale, **bn)(y)
        if self.downsample:
            identity = _conv(self.planes, 1, self.stride, 0, self.dtype, "downsample_0", self.impl)(x)
            identity = ops.batch_norm(train, name="downsample_1", **bn)(identity)
        return ops.materialised_relu(y + identity, impl=self.impl)  # read by the next block's conv and sum


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, v1.5), 1x1 expand x4, plus residual (ResNet-50/101/152)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        bn = dict(axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        identity = x
        y = _conv(self.planes, 1, 1, 0, self.dtype, "conv1", self.impl)(x)
        y = ops.materialised_relu(ops.batch_norm(train, name="bn1", **bn)(y), impl=self.impl)
        y = _conv(self.planes, 3, self.stride, 1, self.dtype, "conv2", self.impl)(y)
        y = ops.materialised_relu(ops.batch_norm(train, name="bn2", **bn)(y), impl=self.impl)
        y = _conv(self.planes * 4, 1, 1, 0, self.dtype, "conv3", self.impl)(y)
        y = ops.batch_norm(train, name="bn3", scale_init=last_scale, **bn)(y)
        if self.downsample:
            identity = _conv(self.planes * 4, 1, self.stride, 0, self.dtype, "downsample_0", self.impl)(x)
            identity = ops.batch_norm(train, name="downsample_1", **bn)(identity)
        return ops.materialised_relu(y + identity, impl=self.impl)  # read by the next block's conv and sum


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global average pool, ``fc``."""

    stage_sizes: Sequence[int]
    bottleneck: bool
    num_classes: int = 1000
    zero_init_residual: bool = False  # last BN gamma of each block starts at 0 (torchvision's flag)
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default
    name_for_errors: str = "resnet"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ops.check_input_size(x, 1, self.name_for_errors)
        block_cls = Bottleneck if self.bottleneck else BasicBlock
        x = x.astype(self.dtype)
        x = _conv(64, 7, 2, 3, self.dtype, "conv1", self.impl)(x)  # (N, H/2, W/2, 64)
        x = ops.batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl, name="bn1")(x)
        x = ops.relu_max_pool(x, 3, 2, padding=1, relu=ops.materialised_relu, impl=self.impl)  # (N, H/4, W/4, 64)
        self.sow("intermediates", "stem", x)
        in_channels = 64
        for stage, blocks in enumerate(self.stage_sizes):
            planes = 64 * 2**stage
            stride = 1 if stage == 0 else 2
            for i in range(blocks):
                block_stride = stride if i == 0 else 1
                out_channels = planes * block_cls.expansion
                x = block_cls(
                    planes,
                    stride=block_stride,
                    downsample=i == 0 and (block_stride != 1 or in_channels != out_channels),
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    bn_axis_name=self.bn_axis_name,
                    impl=self.impl,
                    name=f"layer{stage + 1}_{i}",
                )(x, train=train)
                in_channels = out_channels
            self.sow("intermediates", f"layer{stage + 1}", x)
        x = jnp.mean(x.astype(jnp.promote_types(self.dtype, jnp.float32)), axis=(1, 2))  # avg pool + flatten: (N, C)
        self.sow("intermediates", "pooled", x)
        x = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=ops.torch_default_kernel_init,
            bias_init=ops.torch_default_bias_init(in_channels),
            name="fc",
        )(x.astype(self.dtype))
        return x.astype(jnp.float32)


_STAGES = {
    "resnet18": ((2, 2, 2, 2), False, 11_689_512),
    "resnet34": ((3, 4, 6, 3), False, 21_797_672),
    "resnet50": ((3, 4, 6, 3), True, 25_557_032),
    "resnet101": ((3, 4, 23, 3), True, 44_549_160),
    "resnet152": ((3, 8, 36, 3), True, 60_192_808),
}

# torchvision's ImageNet weight sets: (tag, enum member, file name, acc@1, eval resize)
_WEIGHTS = {
    "resnet18": [("tv_in1k", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, 256)],
    "resnet34": [("tv_in1k", "IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, 256)],
    "resnet50": [
        ("tv_in1k", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.130, 256),
        ("tv2_in1k", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 80.858, 232),
    ],
    "resnet101": [
        ("tv_in1k", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 77.374, 256),
        ("tv2_in1k", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 81.886, 232),
    ],
    "resnet152": [
        ("tv_in1k", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 78.312, 256),
        ("tv2_in1k", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 82.284, 232),
    ],
}


def _constructor(name: str, stage_sizes: tuple[int, ...], bottleneck: bool):
    def build(num_classes: int = 1000, **options: Any) -> ResNet:
        return ResNet(
            stage_sizes=stage_sizes, bottleneck=bottleneck, num_classes=num_classes,
            name_for_errors=name, **options,
        )

    build.__name__ = name
    build.__doc__ = f"torchvision's {name} in Flax (options: zero_init_residual, dtype, bn_axis_name, impl)."
    return build


for _name, (_stages, _bottleneck, _num_params) in _STAGES.items():
    _enum = {"resnet18": "ResNet18", "resnet34": "ResNet34", "resnet50": "ResNet50",
             "resnet101": "ResNet101", "resnet152": "ResNet152"}[_name] + "_Weights"
    register(
        ArchSpec(
            name=_name,
            constructor=_constructor(_name, _stages, _bottleneck),
            input_size=224,
            min_input_size=1,  # torchvision's meta min_size (1, 1)
            torchvision_builder=_name,
            num_params=_num_params,
            classifier=("fc",),
            first_conv="conv1",
            weights=tuple(
                WeightSpec(
                    name=f"{_name}.{tag}",
                    torchvision_enum=f"{_enum}.{member}",
                    file_name=file_name,
                    acc1=acc1,
                    num_params=_num_params,
                    resize=resize,
                )
                for tag, member, file_name, acc1, resize in _WEIGHTS[_name]
            ),
            aliases=("resnet",) if _name == "resnet50" else (),
            description=f"ResNet ({'bottleneck v1.5' if _bottleneck else 'basic'} blocks {_stages})",
        )
    )
