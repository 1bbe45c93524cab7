"""Which implementation the ops take: an explicit, hashable setting, never a module global.

``Impl("reference")`` runs the plain ``lax`` ops (``lax.conv``, ``reduce_window`` and JAX's own gradients),
what GPUs and TPUs are tuned for. ``Impl("cpu")`` runs the rewrites measured on XLA:CPU
(docs/performance.md): convolutions as patches or Winograd products with written-out kernel gradients,
shifted-sum depthwise convolutions, a dense max-pool gradient, BatchNorm's closed-form variance gradient,
stored (materialised) activations. Both compute the same values (tests/test_implementations.py).

A model takes it as its ``impl`` field (``architectures.create(name, impl="cpu")``); a Flax module's fields
are part of its hash, so ``jax.jit`` caches each implementation apart and two can run in one process.
``impl=None`` resolves once, by :func:`resolve`, to ``"cpu"`` on JAX's CPU backend and ``"reference"``
elsewhere. The fields below the name are the CPU path's measured choices, kept as fields so that the A/B
tool (hotspot_jax/bench/ab.py) and the tests can build variants with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import os

import jax

NAMES = ("reference", "cpu")
#: the XLA flag that decides where XLA:CPU runs convolutions (YNNPACK or its own emitter)
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


@dataclasses.dataclass(frozen=True)
class Impl:
    """How the ops compute (see the module doc); frozen and hashable, compared by value."""

    name: str = "reference"
    # convolutions (architectures.ops.conv): "auto" follows the rule there; "xla" or "patches" force one form
    conv: str = "auto"
    patches_max_output_pixels: int = 16  # any kernel on outputs of at most this many pixels: patches
    patches_for_strided: bool = True  # strided kernels: patches
    first_layer_max_channels: int = 4  # large strided kernels on this few channels keep lax.conv (0: off)
    first_layer_min_kernel_pixels: int = 25
    kernel_grad: str = "auto"  # "shifts", "xla", or "auto": "xla" when XLA_FLAGS takes convolutions off YNNPACK
    kernel_grad_chunk_pixels: int = 3136  # the shifted kernel gradient sums over chunks of this many pixels
    winograd_min_channels: int | None = 112  # 3x3 stride-1 convolutions this wide run by Winograd (None: off)
    winograd_min_output_pixels: int = 100
    bias_after_pool: bool = True  # conv -> relu -> max pool: pool before the bias and the ReLU
    # pooling, BatchNorm and activations (architectures.ops.layers, .pooling, .fusion_barrier)
    pool_before_relu: bool = True  # relu -> max pool computed as max pool -> relu
    store_pool_input: bool = True  # relu_max_pool(store_input=True) stores the pool's input once
    store_pool_gradient: bool = True  # max_pool(store_gradient=True) stores the input gradient once
    batchnorm_form: str = "folded"  # "folded" (x * a + b) or "centred" ((x - mean) * a + bias)
    batchnorm_variance_grad: str = "closed-form"  # or "autodiff"
    fusion_barrier: bool = True  # stored() and the stored activations
    mask_from_output: bool = True  # stored activations take the gradient's mask from their output
    relu6: str = "mask"  # "mask" (jax.nn.relu6) or "clip" (jnp.clip)
    # ops that stand for a few torch layers at once
    fold_pooling: bool = True  # AvgPoolLinear: fold the pool into the kernel on maps smaller than its output

    def __post_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"unknown implementation {self.name!r}; expected one of {', '.join(NAMES)}")

    @property
    def cpu(self) -> bool:
        """Whether the CPU rewrites apply."""
        return self.name == "cpu"

    def kernel_grad_mode(self) -> str:
        """``"shifts"`` or ``"xla"``: :attr:`kernel_grad`, ``"auto"`` read from this process's ``XLA_FLAGS``."""
        if self.kernel_grad != "auto":
            return self.kernel_grad
        return "xla" if convolutions_off_ynnpack() else "shifts"


REFERENCE = Impl("reference")
CPU = Impl("cpu")


def default_name() -> str:
    """``"cpu"`` on JAX's CPU backend, ``"reference"`` elsewhere."""
    return "cpu" if jax.default_backend() == "cpu" else "reference"


def resolve(impl: Impl | str | None) -> Impl:
    """``impl`` as an :class:`Impl`: a name becomes that implementation's defaults, None the backend's."""
    if impl is None:
        impl = default_name()
    if isinstance(impl, str):
        return Impl(impl)
    if not isinstance(impl, Impl):
        raise TypeError(f"impl must be an Impl, a name ({', '.join(NAMES)}) or None, got {impl!r}")
    return impl


def flag_value(xla_flags: str, name: str) -> str | None:
    """The value of the last ``name=value`` in ``xla_flags`` (``""`` for a bare ``name``; None if absent)."""
    value = None
    for flag in xla_flags.split():
        if flag.split("=", 1)[0].strip() == name:
            value = flag.split("=", 1)[1] if "=" in flag else ""
    return value


def convolutions_off_ynnpack(xla_flags: str | None = None) -> bool:
    """Whether ``xla_flags`` (default: this process's ``XLA_FLAGS``) takes convolutions off YNNPACK
    (``-individual_convolution`` among the YNN fusion types), as hotspot_jax.xla_flags' default does."""
    if xla_flags is None:
        xla_flags = os.environ.get("XLA_FLAGS", "")
    value = flag_value(xla_flags, YNN_FUSION_FLAG)
    return value is not None and "-individual_convolution" in value.split(",")
