"""AlexNet in Flax, computing exactly what torchvision's ``AlexNet`` computes.

Paper: Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012; torchvision's (and so this) variant follows Krizhevsky, "One weird trick for
parallelizing convolutional neural networks", arXiv:1404.5997 (64/192/384/256/256 channels, no LRN).
The study used MATLAB's ``alexnet`` at 227x227, the default size here.

Sown intermediates (collection ``intermediates``): each name is the dotted path of the torchvision module
whose output (NCHW there, NHWC here) it equals, so a forward hook on ``model.get_submodule(name)`` gives
the reference: ``features.2``, ``features.5`` (conv, ReLU, max pool stages), ``features.7``,
``features.9`` (conv + ReLU), ``features.12`` (last conv, ReLU, max pool), ``avgpool`` (adaptive average
pool to 6x6).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from architectures import backend, layers
from architectures.conv import Conv
from architectures.registry import ArchSpec, WeightSpec, register

MIN_INPUT_SIZE = 63
# sown intermediate name -> torchvision module whose output it equals
TORCH_STAGES = {
    name: name for name in ("features.2", "features.5", "features.7", "features.9", "features.12", "avgpool")
}

# features: (torch index of the conv, out channels, kernel, stride, padding, torch index of the max pool or None)
_CONVS = (
    (0, 64, 11, 4, 2, 2),
    (3, 192, 5, 1, 2, 5),
    (6, 384, 3, 1, 1, None),
    (8, 256, 3, 1, 1, None),
    (10, 256, 3, 1, 1, 12),
)


#: Fold the adaptive average pool into classifier_1 when the map before it is smaller than 6x6 (optimisation
#: log row 21); False: pool, flatten and multiply as torch does (the A/B switch, and the tests' reference).
FOLD_POOLING = True


def pooling_copies(in_hw: tuple[int, int], out_hw: tuple[int, int] = (6, 6)) -> bool:
    """Whether adaptive average pooling of ``in_hw`` to ``out_hw`` has more outputs than inputs (copies them)."""
    return in_hw[0] * in_hw[1] < out_hw[0] * out_hw[1]


def pooling_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """(out_h*out_w, in_h*in_w) matrix of torch's adaptive average pooling (the bins of
    :func:`architectures.layers.adaptive_pool_bins`, as :func:`architectures.layers.adaptive_avg_pool` uses)."""
    (h, w), (oh, ow) = in_hw, out_hw
    m = np.zeros((oh, ow, h, w), np.float32)
    for i, (h0, h1) in enumerate(layers.adaptive_pool_bins(h, oh)):
        for j, (w0, w1) in enumerate(layers.adaptive_pool_bins(w, ow)):
            m[i, j, h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
    return m.reshape(oh * ow, h * w)


class PooledDense(nn.Module):
    """``nn.Dense`` (same parameters, same init) that can take the map *before* the 6x6 adaptive pool.

    With ``pooling`` (the pool as a matrix, :func:`pooling_matrix`) and ``x`` the pre-pool map flattened in
    (C, H, W) order, the kernel's rows for each channel are combined by the pool's weights first, so the
    product is ``x @ fold(kernel)`` with H*W instead of 36 rows per channel: the same linear map, exact up
    to float rounding. On inputs of 63-94 px AlexNet's map before the pool is 1x1, and torch's
    ``classifier_1`` multiplies 36 copies of each value (9216 x 4096 per image), 36x the work needed.
    """

    features: int
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, pooling: np.ndarray | None = None) -> jax.Array:
        rows = x.shape[-1] if pooling is None else x.shape[-1] // pooling.shape[1] * pooling.shape[0]
        kernel = self.param("kernel", self.kernel_init, (rows, self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        if pooling is not None:
            channels = rows // pooling.shape[0]
            # a weighted sum over the 36 bins for each of the H*W pixels (a reduction: XLA's dot for this
            # contraction transposed the whole 151 MB kernel and made inference 0.55x)
            blocks = kernel.reshape(channels, pooling.shape[0], 1, self.features)
            weights = jnp.asarray(pooling[None, :, :, None])  # (1, 36, H*W, 1)
            kernel = jnp.sum(blocks * weights, axis=1).reshape(-1, self.features)
        return x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)


class AlexNet(nn.Module):
    """torchvision's AlexNet: NHWC input, float32 logits (N, num_classes).

    torchvision leaves every conv and linear at torch's default init (kaiming_uniform(a=sqrt(5)),
    biases U(+-1/sqrt(fan_in))), and so does this module.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # AlexNet has no BatchNorm; kept for the common module contract

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_input_size(x, MIN_INPUT_SIZE, "alexnet")
        x = x.astype(self.dtype)
        in_channels = x.shape[-1]
        for index, out, kernel, stride, padding, pool_index in _CONVS:
            x = Conv(
                out, (kernel, kernel), strides=(stride, stride), padding=layers.torch_padding(padding),
                dtype=self.dtype, param_dtype=jnp.float32,
                kernel_init=layers.torch_default_kernel_init,
                bias_init=layers.torch_default_bias_init(in_channels * kernel * kernel),
                name=f"features_{index}",
            )(x)
            in_channels = out
            if pool_index is None:
                x = nn.relu(x)
                self.sow("intermediates", f"features.{index + 1}", x)
            else:
                x = layers.relu_max_pool(x, 3, 2)  # the relu applied to the pooled map (row 38: same values)
                self.sow("intermediates", f"features.{pool_index}", x)

        pre_pool = x
        x = layers.adaptive_avg_pool(x, 6)
        self.sow("intermediates", "avgpool", x)
        fc1 = PooledDense(
            4096, dtype=self.dtype, kernel_init=layers.torch_default_kernel_init,
            bias_init=layers.torch_default_bias_init(256 * 6 * 6), name="classifier_1",
        )
        if FOLD_POOLING and backend.cpu_fast_path() and pooling_copies(pre_pool.shape[1:3]) and (not train or self.dropout_rate == 0):
            # each pixel of a map smaller than 6x6 fills several bins: fold the pooling into the kernel
            x = nn.relu(fc1(layers.flatten_nchw(pre_pool), pooling=pooling_matrix(pre_pool.shape[1:3], (6, 6))))
        else:
            x = layers.flatten_nchw(x)  # torch.flatten on NCHW: classifier_1's rows are in (C, H, W) order
            x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier_0")(x)
            x = nn.relu(fc1(x))

        def dense(features: int, fan_in: int, name: str) -> nn.Dense:
            return nn.Dense(
                features, dtype=self.dtype, param_dtype=jnp.float32,
                kernel_init=layers.torch_default_kernel_init,
                bias_init=layers.torch_default_bias_init(fan_in), name=name,
            )

        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier_3")(x)
        x = nn.relu(dense(4096, 4096, "classifier_4")(x))
        x = dense(self.num_classes, 4096, "classifier_6")(x)
        return x.astype(jnp.float32)


register(
    ArchSpec(
        name="alexnet",
        constructor=AlexNet,
        input_size=227,
        min_input_size=MIN_INPUT_SIZE,
        torchvision_builder="alexnet",
        num_params=61_100_840,
        classifier=("classifier_6",),
        first_conv="features_0",
        weights=(
            WeightSpec(
                name="alexnet.tv_in1k",
                torchvision_enum="AlexNet_Weights.IMAGENET1K_V1",
                file_name="alexnet-owt-7be5be79.pth",
                acc1=56.522,
                num_params=61_100_840,
                resize=256,
                crop=224,
            ),
        ),
        description="AlexNet, torchvision's 'one weird trick' variant (no LRN, no groups); 227x227 as in MATLAB.",
    )
)
