"""EfficientNet-B0, added by following docs/architectures.md: parameter count, conversion by the generic rule,
torchvision parity (BatchNorm statistics randomised, eval and train mode) on both implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures.efficientnet import TORCH_STAGES
from architectures.ops.regularisation import StochasticDepth
from parity_utils import IMPLS, assert_eval_parity, assert_param_count, assert_train_parity, torch_model_for


def test_param_count_matches_torchvisions():
    assert architectures.get("efficientnet_b0").num_params == 5_288_548
    assert assert_param_count("efficientnet_b0", 5_288_548) == 5_288_548
    assert architectures.get("efficientnet").name == "efficientnet_b0"


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_eval_parity_with_randomised_batchnorm(impl):
    """Logits and every stage within 1e-4 x max(1, max |value|) of torchvision's, module-sized and odd inputs."""
    model = torch_model_for("efficientnet_b0", seed=2, num_classes=7)
    assert_eval_parity("efficientnet_b0", model, TORCH_STAGES, sizes=[(40, 24), (67, 45)], batch=2, impl=impl)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_train_parity_batch_statistics(impl):
    """Train mode with dropout and stochastic depth off on both sides: logits and new running statistics."""
    from torchvision.ops import StochasticDepth as TorchStochasticDepth

    model = torch_model_for("efficientnet_b0", seed=1, num_classes=5)
    for module in model.modules():
        if isinstance(module, TorchStochasticDepth):
            module.p = 0.0
    assert_train_parity("efficientnet_b0", model, size=(40, 24), batch=4, dropout_rate=0.0, stochastic_depth_prob=0.0,
                        impl=impl)


def test_stochastic_depth_drops_whole_samples_and_rescales():
    x = jnp.ones((4000, 2, 2, 3))
    y = StochasticDepth(0.25).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    per_sample = np.asarray(y).reshape(4000, -1)
    assert set(np.unique(per_sample).tolist()) <= {0.0, float(np.float32(1.0) / np.float32(0.75))}
    assert np.all(per_sample.min(1) == per_sample.max(1))  # one draw per sample ("row" mode)
    assert abs(float((per_sample[:, 0] == 0).mean()) - 0.25) < 0.03
    np.testing.assert_array_equal(StochasticDepth(0.25).apply({}, x, deterministic=True), x)
