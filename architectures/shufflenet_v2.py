"""ShuffleNetV2 (Ma et al., 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", arXiv:1807.11164) in Flax, computing what torchvision's ``ShuffleNetV2`` computes.

Variants ``shufflenet_v2_x0_5``, ``x1_0``, ``x1_5``, ``x2_0`` differ only in stage widths. Submodule
names follow torchvision's attributes (``conv1_0``, ``stage2_0/branch2_3``, ``conv5_1``, ``fc``) so a
torchvision state_dict converts by rule. Like torchvision, the layers keep torch's default init.

Sown intermediates (``self.sow('intermediates', name, x)``), each but ``pooled`` equal to the output
of the torch module of the same name (``TORCH_STAGES``); ``pooled`` (global mean) is the input of ``fc``:
``conv1``, ``maxpool``, ``stage2``, ``stage3``, ``stage4``, ``conv5``, ``pooled``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures import ops
from architectures.registry import ArchSpec, WeightSpec, register

# sown intermediate name -> torch module whose output it equals (for parity tests; torchvision's
# global pool is a functional mean, so "pooled" has no module to hook)
TORCH_STAGES = {name: name for name in ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")}


def _conv(
    features: int, kernel: int, stride: int, padding: int, name: str, dtype: Any, impl: Any, groups: int = 1
) -> nn.Module:
    """Bias-free conv with torch's symmetric padding and torch's default (kaiming-uniform) init."""
    if groups > 1:  # depthwise (groups == channels): torch's Conv2d(groups=C), as ops.DepthwiseConv computes it
        if groups != features:
            raise ValueError(f"only depthwise grouped convs are used here, got groups={groups}, features={features}")
        return ops.DepthwiseConv(
            features,
            (kernel, kernel),
            strides=(stride, stride),
            padding=ops.torch_padding(padding),
            use_bias=False,
            kernel_init=ops.torch_default_kernel_init,
            dtype=dtype,
            param_dtype=jnp.float32,
            impl=impl,
            name=name,
        )
    return ops.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=ops.torch_padding(padding),
        use_bias=False,
        kernel_init=ops.torch_default_kernel_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        impl=impl,
        name=name,
    )


class InvertedResidual(nn.Module):
    """ShuffleNetV2 unit: channel split (stride 1) or two strided branches, concat, channel shuffle."""

    in_channels: int
    out_channels: int
    stride: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        branch = self.out_channels // 2
        if self.stride == 1 and self.in_channels != 2 * branch:
            raise ValueError(
                f"stride 1 needs in_channels == out_channels, got {self.in_channels}, {self.out_channels}"
            )

        def bn(name: str) -> nn.BatchNorm:
            return ops.batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl, name=name)

        if self.stride == 1:
            keep, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        else:
            c = self.in_channels
            y = _conv(c, 3, self.stride, 1, "branch1_0", self.dtype, self.impl, groups=c)(x)
            y = bn("branch1_1")(y)
            y = _conv(branch, 1, 1, 0, "branch1_2", self.dtype, self.impl)(y)
            keep = nn.relu(bn("branch1_3")(y))
            x2 = x
        y = _conv(branch, 1, 1, 0, "branch2_0", self.dtype, self.impl)(x2)
        y = nn.relu(bn("branch2_1")(y))
        y = _conv(branch, 3, self.stride, 1, "branch2_3", self.dtype, self.impl, groups=branch)(y)
        y = bn("branch2_4")(y)
        y = _conv(branch, 1, 1, 0, "branch2_5", self.dtype, self.impl)(y)
        y = nn.relu(bn("branch2_6")(y))
        out = jnp.concatenate([keep.astype(y.dtype), y], axis=-1)
        return ops.channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """torchvision's ShuffleNetV2 on NHWC input; returns float32 logits ``(N, num_classes)``."""

    num_classes: int = 1000
    stages_repeats: Sequence[int] = (4, 8, 4)
    stages_out_channels: Sequence[int] = (24, 116, 232, 464, 1024)
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ops.check_input_size(x, 1, "shufflenet_v2")
        if len(self.stages_repeats) != 3 or len(self.stages_out_channels) != 5:
            raise ValueError("ShuffleNetV2 needs 3 stage repeats and 5 stage widths")
        x = x.astype(self.dtype)

        def bn(name: str) -> nn.BatchNorm:
            return ops.batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl, name=name)

        channels = self.stages_out_channels[0]
        x = _conv(channels, 3, 2, 1, "conv1_0", self.dtype, self.impl)(x)
        x = bn("conv1_1")(x)
        if self.is_mutable_collection("intermediates"):
            self.sow("intermediates", "conv1", nn.relu(x))
        x = ops.relu_max_pool(x, 3, 2, padding=1, store_input=True, impl=self.impl)
        self.sow("intermediates", "maxpool", x)

        for stage, repeats, out in zip((2, 3, 4), self.stages_repeats, self.stages_out_channels[1:4]):
            for i in range(repeats):
                x = InvertedResidual(
                    channels if i == 0 else out,
                    out,
                    2 if i == 0 else 1,
                    dtype=self.dtype,
                    bn_axis_name=self.bn_axis_name,
                    impl=self.impl,
                    name=f"stage{stage}_{i}",
                )(x, train=train)
            channels = out
            self.sow("intermediates", f"stage{stage}", x)

        last = self.stages_out_channels[-1]
        x = _conv(last, 1, 1, 0, "conv5_0", self.dtype, self.impl)(x)
        x = nn.relu(bn("conv5_1")(x))
        self.sow("intermediates", "conv5", x)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        self.sow("intermediates", "pooled", x)
        x = nn.Dense(
            self.num_classes,
            kernel_init=ops.torch_default_kernel_init,
            bias_init=ops.torch_default_bias_init(last),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="fc",
        )(x)
        return x.astype(jnp.float32)


_VARIANTS = {
    # name: (stage widths, torchvision num_params, weight enum, file name, acc@1, eval resize)
    "shufflenet_v2_x0_5": ((24, 48, 96, 192, 1024), 1366792, "ShuffleNet_V2_X0_5_Weights",
                           "shufflenetv2_x0.5-f707e7126e.pth", 60.552, 256),
    "shufflenet_v2_x1_0": ((24, 116, 232, 464, 1024), 2278604, "ShuffleNet_V2_X1_0_Weights",
                           "shufflenetv2_x1-5666bf0f80.pth", 69.362, 256),
    "shufflenet_v2_x1_5": ((24, 176, 352, 704, 1024), 3503624, "ShuffleNet_V2_X1_5_Weights",
                           "shufflenetv2_x1_5-3c479a10.pth", 72.996, 232),
    "shufflenet_v2_x2_0": ((24, 244, 488, 976, 2048), 7393996, "ShuffleNet_V2_X2_0_Weights",
                           "shufflenetv2_x2_0-8be3c8ee.pth", 76.230, 232),
}

for _name, (_widths, _nparams, _enum, _file, _acc, _resize) in _VARIANTS.items():
    register(
        ArchSpec(
            name=_name,
            constructor=functools.partial(ShuffleNetV2, stages_out_channels=_widths),
            input_size=224,
            min_input_size=1,
            torchvision_builder=_name,
            num_params=_nparams,
            classifier=("fc",),
            first_conv="conv1_0",
            weights=(
                WeightSpec(
                    name=f"{_name}.tv_in1k",
                    torchvision_enum=f"{_enum}.IMAGENET1K_V1",
                    file_name=_file,
                    acc1=_acc,
                    num_params=_nparams,
                    resize=_resize,
                ),
            ),
            aliases=("shufflenet",) if _name == "shufflenet_v2_x1_0" else (),
            description=f"ShuffleNetV2 with stage widths {_widths} (Ma et al., 2018)",
        )
    )
