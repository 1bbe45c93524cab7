"""The study's optimiser against torch: SGD with momentum steps from the same weights and batch agree.

Two steps (the second one exercises the momentum buffer) of ``sgd_momentum(1e-3, 0.9, 1e-4)`` on mean
cross-entropy, train mode (BN on batch statistics, dropout off), compared with ``torch.optim.SGD``.
The *updates* (new - old weights) are compared, since the weights themselves barely move in one step.

Both sides run in float64: a ResNet-50 gradient at 64x64 with batch 4 is ill-conditioned in float32
(train-mode BN over 16 values per channel in layer4): torch float32 vs torch float64 already differ by
~9% on the smallest updates (layer3.5.bn3.bias), so a float32 comparison could not be tight.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import architectures
import weights_convert
from hotspot_jax.train.optimizer import sgd_momentum
from parity_utils import Diff, check, disable_dropout, random_input, require_torch, to_nhwc, torch_model_for
from weights_convert import rules

LR, MOMENTUM, WEIGHT_DECAY = 1e-3, 0.9, 1e-4
STEPS, BATCH, SIZE, CLASSES = 2, 4, 64, 10
RTOL = 1e-5  # relative to each tensor's largest update (float64 on both sides; logits are returned as float32)

CASES = [pytest.param("resnet50", {}, marks=pytest.mark.slow, id="resnet50"),
         pytest.param("squeezenet1_1", {"dropout_rate": 0.0}, id="squeezenet1_1")]


def _torch_updates(model, x: np.ndarray, y: np.ndarray):
    import torch

    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    model.train()
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: (v.detach() - before[k]).numpy() for k, v in model.named_parameters()}, losses


def _flax_updates(arch: str, variables, x: np.ndarray, y: np.ndarray, **options):
    model = architectures.create(arch, num_classes=CLASSES, **options)
    tx = sgd_momentum(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(params):
            logits, state = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                        mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    for _ in range(STEPS):
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, jnp.asarray(to_nhwc(x)),
                                                    jnp.asarray(y))
        losses.append(float(loss))
    delta = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b), params, variables["params"])
    return delta, losses


@pytest.mark.needs_torch
@pytest.mark.parametrize("arch, options", CASES)
def test_sgd_momentum_matches_torch(arch, options):
    require_torch()
    if arch not in architectures.names():
        pytest.skip(f"{arch} is not registered yet (architectures/{arch.rstrip('0123456789_')}.py missing)")
    torch_model = disable_dropout(torch_model_for(arch, num_classes=CLASSES, seed=4))
    variables = weights_convert.convert(arch, torch_model, **options)  # before torch's steps change it
    x = random_input(BATCH, SIZE, SIZE, seed=9).astype(np.float64)
    y = np.random.default_rng(9).integers(0, CLASSES, BATCH).astype(np.int64)

    ref, ref_losses = _torch_updates(torch_model.double(), x, y)
    with jax.enable_x64(True):
        variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        ours, losses = _flax_updates(arch, variables, x, y.astype(np.int32), dtype=jnp.float64, **options)

    override = rules.override_for(architectures.get(arch).name)
    diffs = [Diff(f"{arch} loss step {i + 1}", abs(a - b), abs(b), 1e-6)
             for i, (a, b) in enumerate(zip(losses, ref_losses))]
    worst = None
    for key, update in ref.items():
        path = rules.flax_path(key, update.ndim, override)[1:]
        node = ours
        for part in path:
            node = node[part]
        theirs = rules.flax_layout(key, update, override)
        assert float(np.abs(theirs).max()) > 0, f"{key}: torch did not update it"
        d = Diff(f"{arch} update {key}", float(np.abs(node - theirs).max()), float(np.abs(theirs).max()), RTOL)
        # updates are ~1e-3: relative to the tensor's own largest update, not max(1, .)
        rel = d.max_abs_diff / d.scale
        if worst is None or rel > worst[0]:
            worst = (rel, key, d.max_abs_diff, d.scale)
        assert rel <= RTOL, f"{key}: update differs by {d.max_abs_diff:.3g} (largest update {d.scale:.3g})"
    check(diffs)
    print(f"{arch}: {len(ref)} tensors, worst relative update difference {worst[0]:.3g} in {worst[1]} "
          f"(max|diff| {worst[2]:.3g}, max|update| {worst[3]:.3g})")
