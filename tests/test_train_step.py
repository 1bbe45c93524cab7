"""The pmapped train step: 1 device == 2 devices == an independent full-batch computation; the aux loss;
the loss going down on real images."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from test_train_tiny import TinyNet, fast_compile  # noqa: F401

pytestmark = pytest.mark.usefixtures("fast_compile")
TESTS = Path(__file__).resolve().parent

EQUIVALENCE_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
jax.config.update("jax_disable_most_optimizations", True)
assert jax.local_device_count() == 2, jax.devices()
from test_train_tiny import TinyNet
from hotspot_jax.data import preprocess
from hotspot_jax.train.batching import shard
from hotspot_jax.train.loop import replicate
from hotspot_jax.train.optimizer import sgd_momentum
from hotspot_jax.train.state import create_state, init_variables
from hotspot_jax.train.step import make_train_step

SIZE, STEPS, BATCH = 12, 3, 8
model = TinyNet(num_classes=2, bn_axis_name="batch", dropout_rate=0.0)
tx = sgd_momentum(0.1, 0.9, 1e-3)
key = jax.random.PRNGKey(0)
state0 = create_state(init_variables(model, key, SIZE), tx)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (STEPS, BATCH, 40, 24, 1), dtype=np.uint8)
labels = rng.integers(0, 2, (STEPS, BATCH)).astype(np.int32)
out = {}
for n in (1, 2):
    devices = jax.devices()[:n]
    step = make_train_step(model, tx, SIZE, devices)
    rep = replicate(state0, devices)
    losses = []
    for s in range(STEPS):
        rep, m = step(rep, shard(images[s], n), shard(labels[s], n), key)
        losses.append(float(m["loss"][0]))
    leaves = [np.asarray(x) for x in jax.tree.leaves({"p": rep["params"], "b": rep["batch_stats"]})]
    out[n] = {"losses": losses, "leaves": [x[0] for x in leaves],
              "replica_spread": max(float(np.abs(x - x[:1]).max()) for x in leaves)}

# independent reference: no pmap, no collectives, the whole batch on one device
ref_model = TinyNet(num_classes=2, bn_axis_name=None, dropout_rate=0.0)
state = jax.tree.map(jnp.asarray, state0)
ref_losses = []
for s in range(STEPS):
    x = preprocess(images[s], SIZE)
    def loss_fn(p):
        logits, mut = ref_model.apply({"params": p, "batch_stats": state["batch_stats"]}, x, train=True,
                                      mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels[s]).mean(), mut["batch_stats"]
    (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    upd, opt = tx.update(g, state["opt_state"], state["params"])
    state = {"params": optax.apply_updates(state["params"], upd), "batch_stats": bs, "opt_state": opt}
    ref_losses.append(float(loss))
ref_leaves = [np.asarray(x) for x in jax.tree.leaves({"p": state["params"], "b": state["batch_stats"]})]

def maxdiff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))
moved = maxdiff(out[1]["leaves"], [np.asarray(x) for x in jax.tree.leaves(
    {"p": state0["params"], "b": state0["batch_stats"]})])
print(json.dumps({
    "d1_vs_d2": maxdiff(out[1]["leaves"], out[2]["leaves"]),
    "d1_vs_ref": maxdiff(out[1]["leaves"], ref_leaves),
    "d2_vs_ref": maxdiff(out[2]["leaves"], ref_leaves),
    "moved": moved,
    "losses": [out[1]["losses"], out[2]["losses"], ref_losses],
    "replica_spread": out[2]["replica_spread"],
}))
"""


def test_two_devices_equal_one_device_and_a_plain_full_batch_step():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", EQUIVALENCE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["moved"] > 1e-3  # the steps really changed the weights
    assert r["d1_vs_d2"] < 1e-5, r
    assert r["d1_vs_ref"] < 1e-5, r
    assert r["d2_vs_ref"] < 1e-5, r
    assert r["replica_spread"] == 0.0  # params and BN statistics identical on both devices
    np.testing.assert_allclose(r["losses"][0], r["losses"][1], rtol=1e-5)
    np.testing.assert_allclose(r["losses"][0], r["losses"][2], rtol=1e-5)


def test_aux_heads_add_three_tenths_of_their_loss():
    from hotspot_jax.data import preprocess
    from hotspot_jax.train.loop import replicate
    from hotspot_jax.train.optimizer import sgd_momentum
    from hotspot_jax.train.state import create_state, init_variables
    from hotspot_jax.train.step import make_train_step

    model = TinyNet(num_classes=2, bn_axis_name="batch", dropout_rate=0.0, aux_logits=True)
    tx = sgd_momentum(0.01)
    key = jax.random.PRNGKey(1)
    variables = init_variables(model, key, 8)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 40, 24, 1), dtype=np.uint8)
    labels = np.array([0, 1, 1, 0], np.int32)
    # independent: apply the model once in training mode and read the sown aux logits
    logits, mut = _apply_unsynced(variables, preprocess(images, 8))
    main = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    aux = optax.softmax_cross_entropy_with_integer_labels(mut["aux_logits"]["aux1"][0], labels).mean()
    step = make_train_step(model, tx, 8, jax.devices()[:1])
    _, m = step(replicate(create_state(variables, tx), jax.devices()[:1]), images[None], labels[None], key)
    assert abs(float(m["loss"][0]) - float(main)) < 1e-5
    assert abs(float(m["total_loss"][0]) - float(main + 0.3 * aux)) < 1e-5
    assert float(aux) > 0.1


def _apply_unsynced(variables, x):
    model = TinyNet(num_classes=2, bn_axis_name=None, dropout_rate=0.0, aux_logits=True)
    return model.apply(variables, x, train=True, mutable=["batch_stats", "aux_logits"])


@pytest.mark.needs_data
def test_loss_decreases_on_real_images(real_dataset, tmp_path):
    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train

    cfg = TrainConfig(arch="tiny_cnn_test", epochs=4, batch_size=16, lr=0.05, image_size=16, limit_train=256,
                      limit_eval=64, eval_batch_size=64, workdir=str(tmp_path / "run"), seed=0)
    result = train(cfg, progress=False, log=lambda m: None, dataset=real_dataset)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.02, [r["train_loss"] for r in rows]
    assert result.epochs_done == 4 and result.best is not None
    assert (tmp_path / "run" / "figures" / "training_curves.png").stat().st_size > 1000
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert test["initialisation"] == "scratch" and test["test"]["n"] == 64


def _random_tree(rng, shapes):
    return {name: jnp.asarray(rng.standard_normal(shape).astype(np.float32)) for name, shape in shapes.items()}


@pytest.mark.parametrize("schedule", [False, True])
def test_update_on_the_device_axis_equals_the_plain_optax_update(schedule):
    """Also with a learning-rate schedule (a scalar step count in the state) and kernels-only decay."""
    from hotspot_jax.train import step as step_module
    from hotspot_jax.train.optimizer import sgd_momentum

    rng = np.random.default_rng(3)
    shapes = {"kernel": (3, 3, 4, 5), "bias": (5,), "dense": (7, 2)}
    params, grads = _random_tree(rng, shapes), _random_tree(rng, shapes)
    lr = optax.cosine_decay_schedule(0.1, 10) if schedule else 0.1
    tx = sgd_momentum(lr, 0.9, 1e-3, decay_mask="kernels" if schedule else "all")
    opt_state = tx.init(params)
    opt_state = tx.update(_random_tree(rng, shapes), opt_state, params)[1]  # a non-zero momentum buffer
    updates, want_state = tx.update(grads, opt_state, params)
    want_params = optax.apply_updates(params, updates)

    got_params, got_state = step_module.apply_optimizer(tx, grads, opt_state, params)
    for got, want in zip(jax.tree.leaves((got_params, got_state)), jax.tree.leaves((want_params, want_state))):
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert jax.tree.structure(got_state) == jax.tree.structure(want_state)


def test_after_backward_leaves_every_gradient_unchanged_even_when_one_is_not_finite():
    from hotspot_jax.train.step import after_backward

    rng = np.random.default_rng(4)
    grads = _random_tree(rng, {"a": (4, 3), "b": (6,)})
    for bad in (np.inf, np.nan):
        grads["c"] = jnp.asarray([bad, 1.0], jnp.float32)
        out = jax.jit(after_backward)(grads)
        for name in grads:
            np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(grads[name]))


def _copied_state_shapes(compiled_text: str) -> list[tuple[int, ...]]:
    """Shapes of the step's arguments (the donated state among them) that the compiled step copies."""
    pattern = r"= f32\[([\d,]*)\]\{[\d,]*\} copy\(%flat_args_\d+_"
    return [tuple(int(d) for d in m.group(1).split(",") if d) for m in re.finditer(pattern, compiled_text)]


@pytest.mark.parametrize("layout, unordered", [("device-axis", False), ("device-axis", True), ("per-device", False)])
def test_the_compiled_step_updates_donated_parameters_without_copying_them(monkeypatch, layout, unordered):
    """Row 23 of docs/performance.md: the update on pmap's (1, ...) arrays, ordered after the backward pass,
    writes parameters and momentum in place; either half undone brings the copies back. (XLA still copies
    the 2-value classifier bias in every form; harmless, and not what this is about.)"""
    from hotspot_jax.train import step as step_module
    from hotspot_jax.train.loop import replicate
    from hotspot_jax.train.optimizer import sgd_momentum
    from hotspot_jax.train.state import create_state, init_variables

    jax.config.update("jax_disable_most_optimizations", False)  # copies are decided by the full pipeline
    monkeypatch.setattr(step_module, "UPDATE_LAYOUT", layout)
    if unordered:
        monkeypatch.setattr(step_module, "after_backward", lambda grads: grads)
    model = TinyNet(num_classes=2, bn_axis_name="batch", dropout_rate=0.0)
    tx = sgd_momentum(0.01)
    devices = jax.devices()[:1]
    state = replicate(create_state(init_variables(model, jax.random.PRNGKey(0), 12), tx), devices)
    train_step = step_module.make_train_step(model, tx, 12, devices)
    images = np.zeros((1, 4, 40, 24, 1), np.uint8)
    labels = np.zeros((1, 4), np.int32)
    text = train_step.lower(state, images, labels, jax.random.PRNGKey(1)).compile().as_text()
    copied = _copied_state_shapes(text)
    fc_kernel = tuple(state["params"]["fc"]["kernel"].shape)  # read by fc's input gradient
    if layout == "device-axis" and not unordered:
        assert set(copied) <= {tuple(state["params"]["fc"]["bias"].shape)}, copied
    else:
        assert fc_kernel in copied, copied
