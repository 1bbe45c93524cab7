"""Grad-CAM (hotspot_jax.explain): the target layer of every architecture, the map against a hand computation,
and the map's peak on the one bright spot that a tiny trained network learnt to find."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import architectures
from hotspot_jax.explain import gradcam_layer, head_of, make_gradcam, spatial_children
from hotspot_jax.train.restore import abstract_variables
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

# the last convolutional stage of each architecture (what the report's heat maps show)
EXPECTED_LAYER = {
    "alexnet": "features_10",
    "googlenet": "inception5b",
    "mobilenet_v2": "features_18_1",
    "resnet50": "layer4_2",
    "shufflenet_v2_x1_0": "conv5_1",
    "squeezenet1_1": "features_12",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_LAYER))
def test_layer_is_the_last_convolutional_stage(name):
    """Found abstractly (no computation) for the study's six networks (the rule is the same for every one)."""
    model = architectures.create(name, num_classes=2)
    size = max(64, architectures.get(name).min_input_size)
    variables = abstract_variables(model, size)
    layer = gradcam_layer(model, variables, (size, size), head_of(name))
    shapes = dict(spatial_children(model, variables, (1, size, size, 3)))
    assert len(shapes[layer]) == 4 and shapes[layer][1] * shapes[layer][2] >= 1
    assert layer == EXPECTED_LAYER[name]


class _Features(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (3, 3), padding="SAME", name="conv")(x))


class _CamNet(nn.Module):
    """features -> global mean -> dense: the Grad-CAM weights are (W[:, 1] - W[:, 0]) / (h * w) exactly."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        a = _Features(name="features")(x)
        return nn.Dense(2, name="fc")(jnp.mean(a, axis=(1, 2)))


def test_map_equals_hand_computation():
    model = _CamNet()
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    k = np.asarray(variables["params"]["fc"]["kernel"])
    k = np.stack([-np.abs(k[:, 0]), np.abs(k[:, 1]) * np.array([1.0, -0.2, 1.0, 1.0])], axis=1)  # mostly for a hotspot
    variables = jax.tree.map(lambda v: v, variables)
    variables["params"]["fc"]["kernel"] = jnp.asarray(k)
    assert gradcam_layer(model, variables, (8, 8), head=("fc",)) == "features"
    probs, maps = make_gradcam(model, variables, "features")(x)

    conv = nn.Conv(4, (3, 3), padding="SAME")
    a = np.maximum(np.asarray(conv.apply({"params": variables["params"]["features"]["conv"]}, x)), 0.0)
    cam = np.maximum(np.einsum("nhwc,c->nhw", a, (k[:, 1] - k[:, 0]) / 64.0), 0.0)
    assert (cam.max(axis=(1, 2)) > 0).all()
    cam = cam / cam.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(maps, cam, atol=1e-5)  # same size as the input: the resize is the identity
    logits = np.asarray(model.apply(variables, x, train=False))
    np.testing.assert_allclose(probs, jax.nn.softmax(logits)[:, 1], rtol=1e-6)


# narrow variants of the registered architectures, so a few training steps take seconds on a CPU, and the
# steps each needs before its BatchNorm statistics settle (fewer leave MobileNetV2's eval mode unsure)
TINY = {
    "shufflenet_v2_x1_0": (dict(stages_repeats=(1, 1, 1), stages_out_channels=(8, 16, 32, 64, 64)), 40),
    "mobilenet_v2": (dict(width_mult=0.25, dropout_rate=0.0, inverted_residual_setting=(
        (1, 16, 1, 1), (6, 24, 1, 2), (6, 32, 1, 2), (6, 64, 1, 2), (6, 96, 1, 2))), 80),
}
SIZE, HALF = 64, 5  # input side; half the bright spot's side


def _spots(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images, half of them (label 1) with one bright square near a corner; returns x, labels, centres."""
    x = rng.normal(0.0, 0.15, (n, SIZE, SIZE, 1)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    q = SIZE // 4 - 2
    corners = np.array([[q, q], [q, SIZE - q], [SIZE - q, q], [SIZE - q, SIZE - q]])
    centres = corners[rng.integers(0, 4, n)] + rng.integers(-3, 4, (n, 2))
    for k in np.flatnonzero(labels):
        r, c = centres[k]
        x[k, r - HALF:r + HALF, c - HALF:c + HALF] += 2.0
    return np.repeat(x, 3, axis=-1), labels, centres


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_peak_lies_on_the_spot(name, fast_compile):
    options, steps = TINY[name]
    model = architectures.create(name, num_classes=2, **options)
    variables = model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, SIZE, SIZE, 3)), train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, x, y):
        def loss(p):
            logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (new, logits)

        (_, (new, logits)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), new["batch_stats"], opt, jnp.mean(logits.argmax(-1) == y)

    rng = np.random.default_rng(0)
    accuracy = []
    for _ in range(steps):
        x, y, _ = _spots(rng, 32)
        params, stats, opt, acc = step(params, stats, opt, x, y)
        accuracy.append(float(acc))
    assert np.mean(accuracy[-5:]) >= 0.9  # it learnt the spot

    x, y, centres = _spots(np.random.default_rng(1), 16)
    variables = {"params": params, "batch_stats": stats}
    layer = gradcam_layer(model, variables, (SIZE, SIZE), head_of(name))
    _, maps = make_gradcam(model, variables, layer)(x)
    assert y.sum() >= 4
    for k in np.flatnonzero(y):
        r, c = centres[k]
        on = maps[k, r - HALF:r + HALF, c - HALF:c + HALF].max()
        far = maps[k, SIZE - r - HALF:SIZE - r + HALF, SIZE - c - HALF:SIZE - c + HALF].max()
        assert on == pytest.approx(1.0), f"image {k}: the map's maximum is not on the spot"
        assert far < 0.5, f"image {k}: the opposite corner is as hot ({far:.2f}) as the spot"
