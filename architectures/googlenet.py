"""GoogLeNet (Inception v1) in Flax, computing exactly what torchvision's ``GoogLeNet`` computes.

Paper: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (arXiv:1409.4842). torchvision's
version (and so this one) adds BatchNorm (eps 0.001) after every conv and, a known torchvision quirk
(pytorch/vision#906), uses a 3x3 conv in the "5x5" branch (``branch3_1``). Submodule names follow
torchvision's attributes (``conv1/conv``, ``conv1/bn``, ``inception4a/branch2_1/bn``, ``aux1/fc1``, ``fc``)
so a torchvision state_dict converts by rule.

Options (explicit fields, never switched silently):

- ``aux_logits`` (default **False**, unlike torchvision's constructor): the study's MATLAB ``googlenet``
  has no auxiliary classifiers, torchvision's ``googlenet(weights=...)`` drops them after loading (they
  are not pretrained) and its published 6,624,904 parameters exclude them. With ``aux_logits=True``
  the heads ``aux1`` (after inception4a) and ``aux2`` (after inception4d) are created (also when
  initialised with ``train=False``, so the variables match torchvision's) and, in training only, each
  sows its logits: ``apply(..., train=True, mutable=["batch_stats", "aux_logits"])`` returns
  ``{"aux_logits": {"aux1": {"logits": (a1,)}, "aux2": {"logits": (a2,)}}}`` (sown inside the heads,
  because Flax forbids a sown name equal to a submodule name). ``__call__`` always returns the main
  logits. Train them with torchvision's loss ``main + 0.3 * (aux1 + aux2)``.
- ``transform_input`` (default False, as torchvision's constructor): when True the ImageNet-normalised
  input is re-normalised to ``(x - 0.5) / 0.5`` per channel, as torchvision does. torchvision's
  ``googlenet(weights=GoogLeNet_Weights.IMAGENET1K_V1)`` sets ``transform_input=True`` because these
  weights were ported from a model trained on (x - 0.5) / 0.5 inputs: pass ``transform_input=True``
  when using the ``googlenet.tv_in1k`` weights with ImageNet-normalised images.

Sown intermediates (collection ``intermediates``; :data:`TORCH_STAGES` maps each name to the torchvision
module whose output, NCHW there, NHWC here, it equals; Flax forbids a sown name equal to a submodule
name, hence ``_out``): ``conv1_out``, ``maxpool1``, ``conv2_out``, ``conv3_out``, ``maxpool2``,
``inception3a_out``, ``inception3b_out``, ``maxpool3``, ``inception4a_out`` .. ``inception4e_out``,
``maxpool4``, ``inception5a_out``, ``inception5b_out``, ``avgpool``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures.ops import layers
from architectures.ops.conv import Conv
from architectures.registry import ArchSpec, WeightSpec, register

MIN_INPUT_SIZE = 15
BN_EPSILON = 1e-3

# Inception blocks: name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), torchvision's table.
_INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}

# sown intermediate name -> torchvision module whose output it equals
TORCH_STAGES = {
    **{f"{name}_out": name for name in ("conv1", "conv2", "conv3")},
    **{f"maxpool{i}": f"maxpool{i}" for i in range(1, 5)},
    **{f"{name}_out": name for name in _INCEPTION},
    "avgpool": "avgpool",
}

# (x - 0.5) / 0.5 from ImageNet-normalised x, per channel: x * std / 0.5 + (mean - 0.5) / 0.5
_TRANSFORM_SCALE = tuple(s / 0.5 for s in (0.229, 0.224, 0.225))
_TRANSFORM_SHIFT = tuple((m - 0.5) / 0.5 for m in (0.485, 0.456, 0.406))


def trunc_normal_init(stddev: float = 0.01, lower: float = -2.0, upper: float = 2.0):
    """torch.nn.init.trunc_normal_(std, a, b): truncation at the ABSOLUTE bounds a, b (here +-200 std)."""

    def init(key, shape, dtype=jnp.float32):
        return stddev * jax.random.truncated_normal(key, lower / stddev, upper / stddev, shape, dtype)

    return init


def _dense(features: int, fan_in: int, dtype: Any, name: str) -> nn.Dense:
    """Linear as torchvision's GoogLeNet inits it: weight trunc-normal(0.01), bias torch's default."""
    return nn.Dense(
        features, dtype=dtype, param_dtype=jnp.float32, kernel_init=trunc_normal_init(),
        bias_init=layers.torch_default_bias_init(fan_in), name=name,
    )


class BasicConv2d(nn.Module):
    """Bias-free ``conv``, BatchNorm ``bn`` (eps 0.001), ReLU."""

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = Conv(
            self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
            padding=layers.torch_padding(self.padding), use_bias=False, dtype=self.dtype,
            kernel_init=trunc_normal_init(), impl=self.impl, name="conv",
        )(x)
        x = layers.batch_norm(train, axis_name=self.bn_axis_name, epsilon=BN_EPSILON, dtype=self.dtype,
                              impl=self.impl, name="bn")(x)
        return nn.relu(x)


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3 (torchvision's "5x5"); 3x3 max pool->1x1), concatenated."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        def conv(features: int, kernel: int, padding: int, name: str) -> BasicConv2d:
            return BasicConv2d(features, kernel, padding=padding, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                               impl=self.impl, name=name)

        branch1 = conv(self.ch1x1, 1, 0, "branch1")(x, train=train)
        branch2 = conv(self.ch3x3red, 1, 0, "branch2_0")(x, train=train)
        branch2 = conv(self.ch3x3, 3, 1, "branch2_1")(branch2, train=train)
        branch3 = conv(self.ch5x5red, 1, 0, "branch3_0")(x, train=train)
        branch3 = conv(self.ch5x5, 3, 1, "branch3_1")(branch3, train=train)
        # the pool's input gradient is summed from four branches: the op keeps it in memory once
        branch4 = layers.max_pool(x, 3, 1, padding=1, ceil_mode=True, store_gradient=True, impl=self.impl)
        branch4 = conv(self.pool_proj, 1, 0, "branch4_1")(branch4, train=train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: adaptive avg pool 4x4, 1x1 ``conv`` to 128, ``fc1`` 2048->1024, ReLU, dropout, ``fc2``.

    In training it sows its logits as ``aux_logits/<its name>/logits``.
    """

    num_classes: int
    dropout_rate: float = 0.7
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = layers.adaptive_avg_pool(x, 4)
        x = BasicConv2d(128, 1, dtype=self.dtype, bn_axis_name=self.bn_axis_name, impl=self.impl, name="conv")(
            x, train=train)
        x = layers.flatten_nchw(x)  # torch.flatten on NCHW: fc1's rows are in (C, H, W) order
        x = nn.relu(_dense(1024, 2048, self.dtype, "fc1")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
        logits = _dense(self.num_classes, 1024, self.dtype, "fc2")(x).astype(jnp.float32)
        if train and not self.is_initializing():  # init must not leave stale logits in the variables
            self.sow("aux_logits", "logits", logits)
        return logits


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet: NHWC input, float32 main logits (N, num_classes); see the module docstring."""

    num_classes: int = 1000
    aux_logits: bool = False
    transform_input: bool = False
    dropout_rate: float = 0.2
    aux_dropout_rate: float = 0.7
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_input_size(x, MIN_INPUT_SIZE, "googlenet")
        if self.transform_input:
            scale = jnp.asarray(_TRANSFORM_SCALE, jnp.float32)
            shift = jnp.asarray(_TRANSFORM_SHIFT, jnp.float32)
            x = x.astype(jnp.float32) * scale + shift
        x = x.astype(self.dtype)

        def conv(features: int, kernel: int, stride: int, padding: int, name: str) -> BasicConv2d:
            return BasicConv2d(
                features, kernel, stride, padding, dtype=self.dtype, bn_axis_name=self.bn_axis_name, impl=self.impl,
                name=name
            )

        def inception(h: jax.Array, name: str) -> jax.Array:
            h = Inception(*_INCEPTION[name], dtype=self.dtype, bn_axis_name=self.bn_axis_name, impl=self.impl,
                          name=name)(h, train=train)
            self.sow("intermediates", f"{name}_out", h)
            return h

        def max_pool(h: jax.Array, window: int, name: str) -> jax.Array:
            h = layers.max_pool(h, window, 2, ceil_mode=True, store_gradient=True, impl=self.impl)
            self.sow("intermediates", name, h)
            return h

        def aux(h: jax.Array, name: str) -> None:
            # built at init whatever ``train`` is, so the variables match torchvision's aux_logits=True model
            if self.aux_logits and (train or self.is_initializing()):
                InceptionAux(
                    self.num_classes, self.aux_dropout_rate, dtype=self.dtype,
                    bn_axis_name=self.bn_axis_name, impl=self.impl, name=name,
                )(h, train=train)

        x = conv(64, 7, 2, 3, "conv1")(x, train=train)
        self.sow("intermediates", "conv1_out", x)
        x = max_pool(x, 3, "maxpool1")
        x = conv(64, 1, 1, 0, "conv2")(x, train=train)
        self.sow("intermediates", "conv2_out", x)
        x = conv(192, 3, 1, 1, "conv3")(x, train=train)
        self.sow("intermediates", "conv3_out", x)
        x = max_pool(x, 3, "maxpool2")
        x = inception(x, "inception3a")
        x = inception(x, "inception3b")
        x = max_pool(x, 3, "maxpool3")
        x = inception(x, "inception4a")
        aux(x, "aux1")
        x = inception(x, "inception4b")
        x = inception(x, "inception4c")
        x = inception(x, "inception4d")
        aux(x, "aux2")
        x = inception(x, "inception4e")
        x = max_pool(x, 2, "maxpool4")
        x = inception(x, "inception5a")
        x = inception(x, "inception5b")
        x = layers.adaptive_avg_pool(x.astype(jnp.float32), 1)
        self.sow("intermediates", "avgpool", x)
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
        x = _dense(self.num_classes, 1024, self.dtype, "fc")(x)
        return x.astype(jnp.float32)


register(
    ArchSpec(
        name="googlenet",
        constructor=GoogLeNet,
        input_size=224,
        min_input_size=MIN_INPUT_SIZE,
        torchvision_builder="googlenet",
        num_params=6_624_904,
        # the aux heads count as head: torchvision ships them untrained, so a new class count re-inits them
        classifier=("aux1", "aux2", "fc"),
        first_conv="conv1/conv",
        weights=(
            # torchvision builds the model with transform_input=True for these weights (ported from a
            # model trained on (x - 0.5) / 0.5 inputs): create("googlenet", transform_input=True) to match.
            WeightSpec(
                name="googlenet.tv_in1k",
                torchvision_enum="GoogLeNet_Weights.IMAGENET1K_V1",
                file_name="googlenet-1378be20.pth",
                acc1=69.778,
                num_params=6_624_904,
                resize=256,
                crop=224,
            ),
        ),
        description=(
            "GoogLeNet / Inception v1 with BatchNorm (torchvision). aux_logits defaults to False (as the "
            "study's MATLAB network and the published parameter count); googlenet.tv_in1k expects "
            "transform_input=True, as torchvision sets it for these weights."
        ),
    )
)
