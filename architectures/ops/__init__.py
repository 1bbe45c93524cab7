"""How the architectures' layers are computed, apart from what the networks are.

Architecture files build from these as from ``flax.linen``: :class:`Conv`, :class:`DepthwiseConv`,
:func:`batch_norm`, :func:`max_pool`, :func:`avg_pool`, :func:`adaptive_avg_pool`, and a few ops that stand
for two or three torch layers in a row (:func:`relu_max_pool`, :func:`conv_relu_max_pool`,
:class:`AvgPoolLinear`), each computing exactly what those layers compute. Every op takes
an ``impl`` (:mod:`architectures.ops.impl`): ``"reference"``, the plain ``lax`` ops, or ``"cpu"``, the rewrites
measured on XLA:CPU; a model passes its own ``impl`` field down.
"""

from architectures.ops.impl import CPU, REFERENCE, Impl, resolve
from architectures.ops.layers import (
    TorchBatchNorm, adaptive_avg_pool, adaptive_pool_bins, avg_pool, batch_norm, channel_shuffle,
    check_input_size, count_params, flatten_nchw, kaiming_normal_fan_out, max_pool, relu_max_pool,
    torch_default_bias_init, torch_default_kernel_init, torch_padding,
)
from architectures.ops.conv import Conv, conv_relu_max_pool
from architectures.ops.depthwise import DepthwiseConv
from architectures.ops.avgpool_linear import AvgPoolLinear
from architectures.ops.fusion_barrier import relu as materialised_relu, relu6 as materialised_relu6

__all__ = [
    "CPU", "REFERENCE", "AvgPoolLinear", "Conv", "DepthwiseConv", "Impl", "TorchBatchNorm", "adaptive_avg_pool",
    "adaptive_pool_bins", "avg_pool", "batch_norm", "channel_shuffle", "check_input_size", "conv_relu_max_pool",
    "count_params", "flatten_nchw", "kaiming_normal_fan_out", "materialised_relu", "materialised_relu6", "max_pool",
    "relu_max_pool", "resolve", "torch_default_bias_init", "torch_default_kernel_init", "torch_padding",
]
