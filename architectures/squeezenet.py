"""SqueezeNet 1.0 and 1.1 in Flax, computing exactly what torchvision's ``SqueezeNet(version)`` computes.

Paper: Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model
size", arXiv:1602.07360 (2016); version 1.1 from the official SqueezeNet repository (2.4x less
computation, same accuracy). The study (Açıkgöz et al., 2022) used MATLAB's ``squeezenet``, which is
v1.1 at 227x227, hence the alias ``squeezenet`` -> ``squeezenet1_1`` and the default size 227.

Sown intermediates (collection ``intermediates``): each name is the dotted path of the torchvision module
whose output (NCHW there, NHWC here) it equals, so a forward hook on ``model.get_submodule(name)`` gives
the reference (dotted, because Flax forbids a sown name equal to a submodule name such as ``features_3``):
``features.2`` (stem: conv, ReLU, max pool), ``features.3`` .. ``features.12`` (every Fire module and
max pool; same names for both versions), ``classifier`` (final conv, ReLU and global average pool,
shape (N, 1, 1, num_classes)).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from architectures import backend, layers
from architectures.conv import Conv, conv_relu_max_pool
from architectures.registry import ArchSpec, WeightSpec, register

# torchvision's init: kaiming_uniform_ with its defaults (a=0, fan_in, leaky_relu gain sqrt(2)),
# i.e. U(-sqrt(6 / fan_in), sqrt(6 / fan_in)); the final conv is N(0, 0.01); biases are 0.
kaiming_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
final_conv_init = nn.initializers.normal(stddev=0.01)

# Feature extractor layouts: ("conv", out, kernel, stride) | ("pool",) | ("fire", squeeze, e1x1, e3x3)
_FEATURES: dict[str, tuple[tuple, ...]] = {
    "1_0": (
        ("conv", 96, 7, 2), ("relu",), ("pool",),
        ("fire", 16, 64, 64), ("fire", 16, 64, 64), ("fire", 32, 128, 128), ("pool",),
        ("fire", 32, 128, 128), ("fire", 48, 192, 192), ("fire", 48, 192, 192), ("fire", 64, 256, 256),
        ("pool",), ("fire", 64, 256, 256),
    ),
    "1_1": (
        ("conv", 64, 3, 2), ("relu",), ("pool",),
        ("fire", 16, 64, 64), ("fire", 16, 64, 64), ("pool",),
        ("fire", 32, 128, 128), ("fire", 32, 128, 128), ("pool",),
        ("fire", 48, 192, 192), ("fire", 48, 192, 192), ("fire", 64, 256, 256), ("fire", 64, 256, 256),
    ),
}
MIN_INPUT_SIZE = {"1_0": 21, "1_1": 17}
# sown intermediate name -> torchvision module whose output it equals (same for both versions)
TORCH_STAGES = {**{f"features.{i}": f"features.{i}" for i in range(2, 13)}, "classifier": "classifier"}


#: Fire modules return their two expand outputs as channel parts, which the next squeeze (a 1x1 convolution:
#: one product per part, summed), max pool (per channel) and dropout take without concatenating them; the
#: concatenation is only built where it is sown (row 40 of docs/performance.md). False: concatenated in every
#: Fire module, as torchvision does (the A/B switch); the two compute the same values.
FIRE_OUTPUT_PARTS = True
#: A Fire module followed by a max pool, on maps of at least POOL_IN_FIRE_MIN_PIXELS, applies the pool to its
#: expand convolutions before their biases and ReLUs (:func:`architectures.conv.conv_relu_max_pool`, row 43 of
#: docs/performance.md), unless the Fire output is sown; False: Fire output, then the pool (the A/B switch). The
#: two compute the same values. Measured: at 224 px (55x55 and 27x27 maps) 1.03x training, inference level; at
#: 64 px (15x15, 7x7) training 0.88x and 0.96x in two A/Bs, inference 1.10-1.17x, so off there.
POOL_IN_FIRE = True
POOL_IN_FIRE_MIN_PIXELS = 400

class PartsDropout(nn.Dropout):
    """``nn.Dropout`` of the concatenation of channel parts, returned as parts: one mask drawn for the whole
    map, as ``nn.Dropout`` draws it, so the same values as dropping out the concatenation."""

    @nn.compact
    def __call__(self, parts: layers.Parts, deterministic: bool | None = None, rng=None) -> layers.Parts:
        """``parts`` dropped out as their concatenation would be (see the class)."""
        if len(parts) == 1 or self.rate == 1.0 or self.broadcast_dims:
            return (super().__call__(layers.concat_parts(parts), deterministic, rng),)
        if nn.merge_param("deterministic", self.deterministic, deterministic) or self.rate == 0.0:
            return parts
        keep = 1.0 - self.rate
        shape = (*parts[0].shape[:-1], sum(part.shape[-1] for part in parts))
        mask = jax.random.bernoulli(self.make_rng(self.rng_collection) if rng is None else rng, p=keep, shape=shape)
        masks = jnp.split(mask, np.cumsum([part.shape[-1] for part in parts])[:-1], axis=-1)
        return tuple(jax.lax.select(m, part / keep, jnp.zeros_like(part)) for m, part in zip(masks, parts))


class Fire(nn.Module):
    """Fire module: 1x1 ``squeeze`` conv, then parallel 1x1 and 3x3 ``expand`` convs, concatenated (returned
    as the two parts, each after its ReLU, when :data:`FIRE_OUTPUT_PARTS`; the input may be parts too)."""

    squeeze_planes: int
    expand1x1_planes: int
    expand3x3_planes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array | layers.Parts, *, pooled: bool = False) -> layers.Parts:
        """The Fire output; with ``pooled`` that output max-pooled (3x3, stride 2, ceil mode), the pool applied
        to each expand convolution before its bias and ReLU."""
        conv = functools.partial(
            Conv, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=kaiming_uniform, bias_init=nn.initializers.zeros,
        )
        x = nn.relu(conv(self.squeeze_planes, (1, 1), padding=layers.torch_padding(0), name="squeeze")(x))
        e1 = conv(self.expand1x1_planes, (1, 1), padding=layers.torch_padding(0), name="expand1x1")
        e3 = conv(self.expand3x3_planes, (3, 3), padding=layers.torch_padding(1), name="expand3x3")
        if pooled:
            parts = tuple(conv_relu_max_pool(e, x, 3, 2, ceil_mode=True) for e in (e1, e3))
        else:
            parts = (nn.relu(e1(x)), nn.relu(e3(x)))
        return parts if FIRE_OUTPUT_PARTS and backend.cpu_fast_path() else (layers.concat_parts(parts),)


class SqueezeNet(nn.Module):
    """torchvision's SqueezeNet (``version`` "1_0" or "1_1"): NHWC input, float32 logits (N, num_classes)."""

    version: str = "1_1"
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # SqueezeNet has no BatchNorm; kept for the common module contract

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.version not in _FEATURES:
            raise ValueError(f"unsupported SqueezeNet version {self.version!r}: '1_0' or '1_1' expected")
        layers.check_input_size(x, MIN_INPUT_SIZE[self.version], f"squeezenet{self.version}")
        x = x.astype(self.dtype)
        features = _FEATURES[self.version]
        sowing = self.is_mutable_collection("intermediates")
        pooled_already = False  # the current pool was applied by the layer before it
        for i, layer in enumerate(features):
            name = f"features_{i}"
            kind = layer[0]
            if kind == "conv":  # the stem: conv, then the ReLU and max pool of the next two torch modules
                if features[i + 1:i + 3] != (("relu",), ("pool",)):
                    raise AssertionError(f"SqueezeNet {self.version}: the stem convolution is not followed by relu, pool")
                _, out, kernel, stride = layer
                stem = Conv(
                    out, (kernel, kernel), strides=(stride, stride), padding=layers.torch_padding(0),
                    dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=kaiming_uniform, bias_init=nn.initializers.zeros, name=name,
                )
                x = (conv_relu_max_pool(stem, x, 3, 2, ceil_mode=True),)
                continue  # the stage (features.2) is sown at the pool's index
            if kind == "relu":
                continue  # applied with the stem
            if kind == "pool":
                if not (pooled_already or features[i - 1] == ("relu",)):  # the stem applies its own pool
                    x = tuple(layers.max_pool(part, 3, 2, ceil_mode=True) for part in layers.as_parts(x))
                pooled_already = False
            else:
                _, squeeze, e1, e3 = layer
                height, width = layers.as_parts(x)[0].shape[1:3]  # a Fire module keeps the map's size
                pooled_already = (POOL_IN_FIRE and backend.cpu_fast_path() and not sowing and features[i + 1:i + 2] == (("pool",),)
                                  and height * width >= POOL_IN_FIRE_MIN_PIXELS)
                x = Fire(squeeze, e1, e3, dtype=self.dtype, name=name)(x, pooled=pooled_already)
            if sowing:  # the concatenation only where it is asked for
                self.sow("intermediates", f"features.{i}", layers.concat_parts(x))

        x = PartsDropout(self.dropout_rate, deterministic=not train, name="classifier_0")(x)
        x = Conv(
            self.num_classes, (1, 1), padding=layers.torch_padding(0), dtype=self.dtype,
            param_dtype=jnp.float32, kernel_init=final_conv_init, bias_init=nn.initializers.zeros,
            name="classifier_1",
        )(x)
        x = nn.relu(x).astype(jnp.float32)
        x = layers.adaptive_avg_pool(x, 1)
        self.sow("intermediates", "classifier", x)
        return x.reshape(x.shape[0], -1)


def _weights(version: str, file_name: str, acc1: float, num_params: int) -> WeightSpec:
    return WeightSpec(
        name=f"squeezenet{version}.tv_in1k",
        torchvision_enum=f"SqueezeNet{version}_Weights.IMAGENET1K_V1",
        file_name=file_name,
        acc1=acc1,
        num_params=num_params,
        resize=256,
        crop=224,
    )


register(
    ArchSpec(
        name="squeezenet1_0",
        constructor=functools.partial(SqueezeNet, version="1_0"),
        input_size=227,
        min_input_size=MIN_INPUT_SIZE["1_0"],
        torchvision_builder="squeezenet1_0",
        num_params=1_248_424,
        classifier=("classifier_1",),
        first_conv="features_0",
        weights=(_weights("1_0", "squeezenet1_0-b66bff10.pth", 58.092, 1_248_424),),
        description="SqueezeNet 1.0 (Iandola et al. 2016): Fire modules, no BatchNorm, 1x1 conv classifier.",
    )
)
register(
    ArchSpec(
        name="squeezenet1_1",
        constructor=functools.partial(SqueezeNet, version="1_1"),
        input_size=227,
        min_input_size=MIN_INPUT_SIZE["1_1"],
        torchvision_builder="squeezenet1_1",
        num_params=1_235_496,
        classifier=("classifier_1",),
        first_conv="features_0",
        weights=(_weights("1_1", "squeezenet1_1-b8a52dc0.pth", 58.178, 1_235_496),),
        aliases=("squeezenet",),
        description="SqueezeNet 1.1 (the study's MATLAB squeezenet, 227x227): 2.4x cheaper than 1.0.",
    )
)
