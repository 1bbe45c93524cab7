"""Make XLA:CPU store a tensor once instead of recomputing it inside every operation that reads it.

XLA fuses cheap elementwise producers into each of their consumers, duplicating them. For a block
output such as ResNet's ``relu(bn3(conv3) + identity)``, read by the next block's convolution and by its
residual sum, each consumer then recomputes it from the convolutions behind it, and the residual chain
makes that transitive: in a ResNet-50 training step at 224 px one layer1 sum read four convolution
outputs to produce one tensor.

:func:`stored` returns ``x`` divided by a 1 that comes through an optimisation barrier. ``x / 1`` equals
``x`` exactly for every float (NaN, infinities and -0 included), and XLA does not duplicate a division
into several fusions, so the tensor is computed once and stored. XLA rewrites a division by a 1 with one
use into a multiplication (which it duplicates again); in a training step the 1 also divides the
gradient, so it has two uses and the division stays (checked by tests/test_fusion_barrier.py); in an
inference step it becomes a multiplication by 1, fused, and changes nothing. Used only where it paid
(why: docs/performance.md, "Optimisation log"): ResNet's ReLUs, GoogLeNet's max-pool input gradients
(through ``architectures.ops.pooling``) and ShuffleNetV2's stem pool input (``relu_max_pool(store_input=True)``);
not MobileNetV2. Only on the CPU path, with ``Impl.fusion_barrier`` (:mod:`architectures.ops.impl`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from architectures.ops.impl import Impl, resolve


def active(impl: Impl | str | None = None) -> bool:
    """Whether :func:`stored` inserts its division (the CPU path, with ``impl.fusion_barrier``)."""
    impl = resolve(impl)
    return impl.cpu and impl.fusion_barrier


def barrier_one(dtype) -> jax.Array:
    """A 1 of ``dtype`` that XLA cannot fold before fusion (it comes through an optimisation barrier)."""
    return jax.lax.optimization_barrier(jnp.ones((), dtype))


def stored(x: jax.Array, impl: Impl | str | None = None) -> jax.Array:
    """``x`` unchanged in value, computed once and kept in memory by XLA:CPU (module doc)."""
    if not active(impl) or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x / barrier_one(x.dtype)


def _stored_activation(act, inside):
    """``act`` with its output :func:`stored` and its gradient's mask read from that output: the mask
    from the input would make XLA recompute the input (a BatchNorm output, not kept) in the backward
    pass. ``inside(y)`` is where the gradient is 1 (0 elsewhere), as JAX's own ``act`` differentiates.
    The 1 is made outside the custom VJP: made inside, XLA folded it and the division with it."""

    @jax.custom_vjp
    def apply(x, one):
        return act(x) / one

    def forward(x, one):
        y = act(x) / one
        return y, (y, one)

    def backward(residuals, g):
        y, one = residuals
        return jnp.where(inside(y), g, jnp.zeros_like(g)) / one, jnp.zeros((), g.dtype)

    apply.defvjp(forward, backward)

    def call(x: jax.Array, impl: Impl | str | None = None) -> jax.Array:
        impl = resolve(impl)
        if not active(impl):
            return act(x)
        return apply(x, barrier_one(x.dtype)) if impl.mask_from_output else stored(act(x), impl)

    return call


#: ``jax.nn.relu`` (gradient 1 where x > 0, else 0; y > 0 exactly where x > 0), output computed once
relu = _stored_activation(jax.nn.relu, lambda y: y > 0)
#: ``jax.nn.relu6`` (gradient 1 strictly inside (0, 6), else 0, as torch's), output computed once
relu6 = _stored_activation(jax.nn.relu6, lambda y: (y > 0) & (y < 6))
