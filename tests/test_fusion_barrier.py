"""architectures.ops.fusion_barrier: stored tensors and activations equal JAX's own, values and gradients bit
for bit, and the division that keeps XLA:CPU from recomputing them is still in the compiled training step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures.ops import fusion_barrier
from architectures.ops.impl import Impl

SPECIAL = jnp.array([-7.0, -1.0, -0.0, 0.0, 1e-30, 0.5, 3.0, 6.0, 6.5, jnp.inf, -jnp.inf, jnp.nan], jnp.float32)


def _value_and_grad(act, x):
    weights = jnp.arange(1, x.size + 1, dtype=x.dtype)
    return jax.jit(jax.value_and_grad(lambda v: jnp.nansum(act(v) * weights)))(x), jax.jit(act)(x)


@pytest.mark.parametrize("mask_from_output", [True, False])
@pytest.mark.parametrize("mine, reference", [(fusion_barrier.relu, jax.nn.relu), (fusion_barrier.relu6, jax.nn.relu6)],
                         ids=["relu", "relu6"])
def test_activations_equal_jax_values_and_gradients_bit_for_bit(mine, reference, mask_from_output):
    impl = Impl("cpu", mask_from_output=mask_from_output)
    (loss, grad), out = _value_and_grad(lambda v: mine(v, impl), SPECIAL)
    (ref_loss, ref_grad), ref_out = _value_and_grad(reference, SPECIAL)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref_out))  # NaN positions included
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(ref_grad))
    assert np.asarray(loss) == np.asarray(ref_loss)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_stored_is_the_identity_and_keeps_the_dtype(dtype):
    x = SPECIAL.astype(dtype)
    y = jax.jit(lambda v: fusion_barrier.stored(v, "cpu"))(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(x, np.float32))
    assert np.array_equal(np.signbit(np.asarray(y, np.float32)), np.signbit(np.asarray(x, np.float32)))  # -0 stays -0
    ints = jnp.arange(5)
    assert fusion_barrier.stored(ints, "cpu") is ints


def _train_like_hlo(x, impl=Impl("cpu")):
    w = jnp.ones((x.shape[-1], x.shape[-1]), x.dtype)

    def loss(v):
        y = fusion_barrier.relu(v, impl)
        z = fusion_barrier.relu6(y @ w + y, impl)  # y read twice, as a block output is
        return (z @ w).sum()

    return jax.jit(jax.grad(loss)).lower(x).compile().as_text()


def test_the_division_survives_xla_in_a_training_step():
    """The mechanism itself: XLA turns a division by a 1 with a single use into a multiplication, which it
    fuses and duplicates again; the custom VJP divides its gradient too, so the 1 has two uses and the
    divisions stay. If a new XLA folds them, this fails and row 34 of docs/performance.md needs redoing."""
    if jax.default_backend() != "cpu":
        pytest.skip("the barrier only acts on the CPU backend")
    x = jnp.linspace(-3.0, 9.0, 4000, dtype=jnp.float32).reshape(100, 40)
    assert _train_like_hlo(x).count("divide(") >= 4  # two activations, forward and backward
    assert _train_like_hlo(x, Impl("cpu", fusion_barrier=False)).count("divide(") == 0
    assert _train_like_hlo(x, Impl("reference")).count("divide(") == 0


def test_the_ab_patches_turn_the_barrier_and_the_output_masks_off():
    from hotspot_jax.bench import ab

    masks = ab.variant_impl(["fusion-barrier=input-masks"])
    assert masks.fusion_barrier and not masks.mask_from_output
    off = ab.variant_impl(["fusion-barrier=off"])
    assert not fusion_barrier.active(off)
    x = jnp.arange(-2.0, 3.0)
    np.testing.assert_array_equal(np.asarray(fusion_barrier.relu(x, off)), np.asarray(jax.nn.relu(x)))
