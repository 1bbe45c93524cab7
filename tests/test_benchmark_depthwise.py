"""The fast depthwise conv (architectures.ops.depthwise) against ``nn.Conv(feature_group_count=C)``.

Same parameters from the same init, the same forward (to float32 rounding), and gradients equal to JAX's autodiff of the
grouped convolution for every stride and padding MobileNetV2 and ShuffleNetV2 use; bfloat16 too.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures.ops import layers
from architectures.ops.depthwise import DepthwiseConv


def _pair(c, stride, padding, use_bias, dtype=jnp.float32):
    kw = dict(
        strides=(stride, stride), padding=layers.torch_padding(padding), use_bias=use_bias,
        kernel_init=layers.kaiming_normal_fan_out, bias_init=nn.initializers.normal(0.1), dtype=dtype,
        param_dtype=jnp.float32,
    )
    return DepthwiseConv(c, (3, 3), **kw), nn.Conv(c, (3, 3), feature_group_count=c, **kw)


@pytest.mark.parametrize("stride,padding,use_bias,hw", [
    (1, 1, False, (7, 7)), (2, 1, False, (8, 8)), (2, 1, False, (7, 5)), (2, 0, True, (9, 6)), (1, 0, True, (5, 5)),
])
def test_same_params_forward_and_gradients_as_grouped_conv(stride, padding, use_bias, hw):
    c = 6
    fast, ref = _pair(c, stride, padding, use_bias)
    rng = np.random.default_rng(stride * 10 + padding)
    x = jnp.asarray(rng.standard_normal((3, *hw, c), dtype=np.float32))
    key = jax.random.PRNGKey(3)
    vf, vr = fast.init(key, x), ref.init(key, x)
    assert jax.tree.structure(vf) == jax.tree.structure(vr)
    for a, b in zip(jax.tree.leaves(vf), jax.tree.leaves(vr)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    yf, yr = fast.apply(vf, x), ref.apply(vr, x)
    np.testing.assert_allclose(np.asarray(yf), np.asarray(yr), rtol=1e-5, atol=1e-6)
    w = jnp.asarray(rng.standard_normal(yr.shape, dtype=np.float32))

    def grads(module, variables):
        return jax.grad(lambda v, x: jnp.sum(module.apply(v, x) * w), argnums=(0, 1))(variables, x)

    (gvf, gxf), (gvr, gxr) = jax.jit(lambda: grads(fast, vf))(), grads(ref, vr)
    np.testing.assert_allclose(np.asarray(gxf), np.asarray(gxr), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(gvf), jax.tree.leaves(gvr)):
        assert float(jnp.abs(b).max()) > 0
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_float32_params():
    fast, ref = _pair(4, 2, 1, False, dtype=jnp.bfloat16)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 4)), jnp.float32)
    v = fast.init(jax.random.PRNGKey(0), x)
    assert v["params"]["kernel"].dtype == jnp.float32
    y = fast.apply(v, x)
    assert y.dtype == jnp.bfloat16
    g = jax.grad(lambda v: jnp.sum(fast.apply(v, x).astype(jnp.float32)))(v)
    gr = jax.grad(lambda v: jnp.sum(ref.apply(v, x).astype(jnp.float32)))(v)
    assert g["params"]["kernel"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g["params"]["kernel"]), np.asarray(gr["params"]["kernel"]), rtol=0.05, atol=0.1)


def test_rejects_a_channel_mismatch():
    fast, _ = _pair(4, 1, 1, False)
    with pytest.raises(ValueError, match="4 features but 3 input channels"):
        fast.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 5, 3)))
