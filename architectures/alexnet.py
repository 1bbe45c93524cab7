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

from architectures import ops
from architectures.ops.avgpool_linear import AvgPoolLinear
from architectures.registry import ArchSpec, WeightSpec, register

MIN_INPUT_SIZE = 63
TORCH_STAGES = {
    name: name for name in ("features.2", "features.5", "features.7", "features.9", "features.12", "avgpool")
}

# features: (torch index of the conv, out channels, kernel, stride, padding, torch index of the max pool or None);
# each conv is followed by a ReLU, and three of them by a 3x3 stride-2 max pool
FEATURES = (
    (0, 64, 11, 4, 2, 2),
    (3, 192, 5, 1, 2, 5),
    (6, 384, 3, 1, 1, None),
    (8, 256, 3, 1, 1, None),
    (10, 256, 3, 1, 1, 12),
)


class AlexNet(nn.Module):
    """torchvision's AlexNet: NHWC input, float32 logits (N, num_classes).

    torchvision leaves every conv and linear at torch's default init (kaiming_uniform(a=sqrt(5)),
    biases U(+-1/sqrt(fan_in))), and so does this module.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # AlexNet has no BatchNorm; kept for the common module contract
    impl: Any = None  # how the ops compute (architectures.ops.impl); None: the backend's default

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ops.check_input_size(x, MIN_INPUT_SIZE, "alexnet")
        x = x.astype(self.dtype)
        for index, out, kernel, stride, padding, pool_index in FEATURES:
            x = ops.Conv(
                out, (kernel, kernel), strides=(stride, stride), padding=ops.torch_padding(padding),
                dtype=self.dtype, kernel_init=ops.torch_default_kernel_init,
                bias_init=ops.torch_default_bias_init(x.shape[-1] * kernel * kernel), impl=self.impl,
                name=f"features_{index}",
            )(x)
            if pool_index is None:
                x = nn.relu(x)
                self.sow("intermediates", f"features.{index + 1}", x)
            else:  # ReLU, then MaxPool2d(3, 2)
                x = ops.relu_max_pool(x, 3, 2, impl=self.impl)
                self.sow("intermediates", f"features.{pool_index}", x)

        self.sow("intermediates", "avgpool", ops.adaptive_avg_pool(x, 6))

        def linear(features: int, fan_in: int, name: str) -> nn.Dense:
            return nn.Dense(features, dtype=self.dtype, kernel_init=ops.torch_default_kernel_init,
                            bias_init=ops.torch_default_bias_init(fan_in), name=name)

        # avgpool, flatten, classifier.0 (Dropout) and classifier.1 (Linear 9216 -> 4096)
        x = AvgPoolLinear(4096, (6, 6), self.dropout_rate, dtype=self.dtype, kernel_init=ops.torch_default_kernel_init,
                          bias_init=ops.torch_default_bias_init(256 * 6 * 6), impl=self.impl, name="classifier_1")(
            x, train=train)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier_3")(x)
        x = nn.relu(linear(4096, 4096, "classifier_4")(x))
        x = linear(self.num_classes, 4096, "classifier_6")(x)
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
