"""Off the CPU backend the architectures run the plain lax ops (architectures.backend).

With ``backend.cpu_fast_path`` made to say False (as on a GPU), a training forward pass of each network holds
no custom gradient and no optimisation barrier (the CPU rewrites' marks); its logits equal the fast path's in
training mode (batch statistics, dropout), and its gradients equal the fast path's in evaluation mode.
Training-mode gradients are not compared: at a batch of 4 from random weights they amplify float rounding,
so that any reordering of a sum (the plain convolution alone, or the plain depthwise form alone) moved
ShuffleNetV2's conv1 kernel gradient by 2% (in evaluation mode, single elements of ResNet-50's BatchNorm bias gradients by up to 5%); the batch-variance gradient has its own test (test_batchnorm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures import backend
from hotspot_jax.train.state import init_variables

CPU_MARKS = ("custom_vjp_call", "optimization_barrier")
# (architecture, input size): small inputs that still meet every rewrite's size rule where one applies
CASES = [("alexnet", 63), ("googlenet", 64), ("shufflenet_v2_x1_0", 64), ("squeezenet1_1", 64),
         ("resnet50", 64), ("mobilenet_v2", 64)]


def _run(arch: str, size: int):
    """(training forward's jaxpr text, training logits, evaluation-mode gradients) of one network."""
    model = architectures.create(arch, num_classes=2)
    variables = init_variables(model, jax.random.PRNGKey(0), size)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, size, size, 3), jnp.float32)

    def train_logits(params):
        return model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.PRNGKey(2)})[0]

    def eval_loss(params):
        return jnp.sum(model.apply({**variables, "params": params}, x, train=False) * jnp.array([1.0, -0.5]))

    jaxpr = str(jax.make_jaxpr(train_logits)(variables["params"]))  # custom gradients show as calls here
    return jaxpr, jax.jit(train_logits)(variables["params"]), jax.jit(jax.grad(eval_loss))(variables["params"])


@pytest.mark.parametrize("arch,size", CASES)
def test_plain_ops_off_the_cpu(arch, size, monkeypatch):
    fast_jaxpr, fast_logits, fast_grads = _run(arch, size)
    assert any(mark in fast_jaxpr for mark in CPU_MARKS), "the CPU fast path shows none of its marks"
    monkeypatch.setattr(backend, "cpu_fast_path", lambda: False)
    plain_jaxpr, plain_logits, plain_grads = _run(arch, size)
    for mark in CPU_MARKS:
        assert mark not in plain_jaxpr, f"{arch}: {mark} in the plain path's training forward pass"
    scale = max(1.0, float(jnp.max(jnp.abs(fast_logits))))
    np.testing.assert_allclose(plain_logits, fast_logits, rtol=1e-4, atol=1e-4 * scale)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(fast_grads), jax.tree_util.tree_leaves(plain_grads)):
        # per parameter, the norm of the difference: single elements of ResNet-50's gradients moved by 5%
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.linalg.norm(b - a) <= 1e-3 * np.linalg.norm(a) + 1e-9, f"{arch} {jax.tree_util.keystr(path)}"
