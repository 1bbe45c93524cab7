"""Label smoothing, mixup and test-time flips (hotspot_jax.train.step), the levers issue 23 asks to measure:
what each computes, that each is off by default, and that a run's evaluation and its restored model agree."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import test_train_tiny  # noqa: F401  (registers the tiny_cnn_test architecture)
from test_train_tiny import fast_compile  # noqa: F401  (fixture)
from hotspot_jax.errors import ConfigError
from hotspot_jax.reproduce.recipes import RECIPES, with_overrides
from hotspot_jax.train import step as steps
from hotspot_jax.train.config import TrainConfig
from hotspot_jax.train.optimizer import sgd_momentum
from hotspot_jax.train.restore import _predict_fn, build_model
from hotspot_jax.train.state import create_state, init_variables

DEVICES = jax.local_devices()[:1]


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (1, n, 40, 24, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, (1, n)).astype(np.int32)
    return images, labels


def _state(model, tx):
    from hotspot_jax.train.loop import replicate

    return replicate(create_state(init_variables(model, jax.random.PRNGKey(0), 16), tx), DEVICES)


def test_soft_targets_and_mixup_compute_what_they_say():
    t = steps.soft_targets(jnp.array([0, 1]), 2, 0.1)
    np.testing.assert_allclose(t, [[0.95, 0.05], [0.05, 0.95]], rtol=1e-6)
    x = jnp.arange(4 * 3, dtype=jnp.float32).reshape(4, 3)
    labels = jnp.array([0, 1, 1, 0])
    mixed, a, b, lam = steps.mixup(x, labels, jax.random.PRNGKey(3), 0.4)
    perm = jax.random.permutation(jax.random.split(jax.random.PRNGKey(3))[1], 4)
    assert 0.0 <= float(lam) <= 1.0
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[perm], rtol=1e-6)
    np.testing.assert_array_equal(a, labels)
    np.testing.assert_array_equal(b, labels[perm])


@pytest.mark.parametrize("smoothing,alpha", [(0.1, 0.0), (0.0, 0.2), (0.1, 0.2)])
def test_a_train_step_with_the_levers_runs_and_differs_from_the_plain_one(smoothing, alpha, fast_compile):
    model = build_model({"run": {"arch": "tiny_cnn_test"}}, bn_axis_name=steps.AXIS)
    tx = sgd_momentum(0.1)
    images, labels = _batch()
    key = jax.random.PRNGKey(1)
    plain = steps.make_train_step(model, tx, 16, DEVICES)
    lever = steps.make_train_step(model, tx, 16, DEVICES, label_smoothing=smoothing, mixup_alpha=alpha)
    _, m_plain = plain(_state(model, tx), images, labels, key)
    _, m_lever = lever(_state(model, tx), images, labels, key)
    assert np.isfinite(float(m_lever["loss"][0]))
    assert float(m_lever["loss"][0]) != pytest.approx(float(m_plain["loss"][0]), abs=1e-6)


def test_smoothed_loss_is_optax_cross_entropy_on_the_smoothed_targets(fast_compile):
    model = build_model({"run": {"arch": "tiny_cnn_test"}}, bn_axis_name=steps.AXIS)
    tx = sgd_momentum(0.0)
    images, labels = _batch()
    key = jax.random.PRNGKey(1)
    state = _state(model, tx)
    _, m = steps.make_train_step(model, tx, 16, DEVICES, label_smoothing=0.2)(state, images, labels, key)
    # the same forward pass by hand: same dropout key rule, same preprocessing
    host = jax.tree.map(lambda a: a[0], _state(model, tx))
    k = jax.random.fold_in(jax.random.fold_in(key, 0), 0)
    single_device = build_model({"run": {"arch": "tiny_cnn_test"}})  # BatchNorm over this batch, no pmap axis
    logits, _ = single_device.apply({"params": host["params"], "batch_stats": host["batch_stats"]},
                            steps._preprocess(jnp.asarray(images[0]), 16), train=True, rngs={"dropout": k},
                            mutable=["batch_stats"])
    want = optax.softmax_cross_entropy(logits, steps.soft_targets(jnp.asarray(labels[0]), 2, 0.2)).mean()
    assert float(m["loss"][0]) == pytest.approx(float(want), rel=1e-5)


def test_flips_average_four_views_and_the_restored_model_agrees(fast_compile):
    model = build_model({"run": {"arch": "tiny_cnn_test"}}, bn_axis_name=steps.AXIS)
    tx = sgd_momentum(0.1)
    images, labels = _batch(seed=2)
    views = steps.tta_views(jnp.asarray(images[0]), "flips")
    assert len(views) == 4 and (np.asarray(views[3]) == images[0][:, ::-1, ::-1]).all()
    state = _state(model, tx)
    probs, loss, correct = steps.make_eval_step(model, 16, DEVICES, tta="flips")(state, images, labels)
    variables = {"params": jax.tree.map(lambda a: a[0], state["params"]),
                 "batch_stats": jax.tree.map(lambda a: a[0], state["batch_stats"])}
    plain_model = build_model({"run": {"arch": "tiny_cnn_test"}})  # as load_trained builds it
    single = [np.asarray(_predict_fn(plain_model, 16)(variables, v)) for v in views]
    np.testing.assert_allclose(probs[0], np.mean(single, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_predict_fn(plain_model, 16, "flips")(variables, images[0]), probs[0], rtol=1e-5,
                               atol=1e-6)
    assert probs.shape == (1, 8, 2)  # every class's probability, (devices, batch, classes)
    picked = np.take_along_axis(np.asarray(probs[0]), np.asarray(labels[0])[:, None], -1)[:, 0]
    np.testing.assert_allclose(loss[0], -np.log(picked), rtol=1e-4)
    plain, _, _ = steps.make_eval_step(model, 16, DEVICES)(state, images, labels)
    np.testing.assert_allclose(plain[0], single[0], rtol=1e-5, atol=1e-6)


def test_source_aspect_keeps_the_images_shape():
    from hotspot_jax.data.preprocess import input_hw

    assert input_hw(48, "square") == (48, 48) and input_hw(48, "source") == (80, 48)
    assert input_hw(24, "source") == (40, 24)  # the source images' own shape
    cfg = dataclasses.replace(TrainConfig(arch="tiny_cnn_test", image_size=16, aspect="source")).resolve()
    assert cfg.input_hw == (27, 16)


@pytest.mark.parametrize("change,message", [({"label_smoothing": 1.0}, "--label-smoothing"),
                                            ({"aspect": "wide"}, "--aspect"),
                                            ({"mixup_alpha": -1.0}, "--mixup-alpha"),
                                            ({"tta": "rotations"}, "--tta")])
def test_bad_settings_are_one_clear_error(change, message):
    cfg = dataclasses.replace(TrainConfig(arch="tiny_cnn_test"), **change)
    with pytest.raises(ConfigError, match=message):
        cfg.resolve()


def test_recipes_pass_the_levers_and_committed_fingerprints_stay():
    best = RECIPES["best"]
    assert best.fingerprint() == "8c3bb5354740"  # the committed results/best runs' fingerprint
    lever = with_overrides(best, ["tta=flips", "mixup_alpha=0.2", "label_smoothing=0.1"])
    assert lever.lever_options()["tta"] == "flips" and lever.lever_options()["mixup_alpha"] == 0.2
    cfg = lever.train_config("tiny_cnn_test", 0, "/tmp/w")
    assert (cfg.tta, cfg.mixup_alpha, cfg.label_smoothing) == ("flips", 0.2, 0.1)
    assert lever.fingerprint() != best.fingerprint()


def test_a_restored_model_predicts_with_flips_on_request(tmp_path):
    from hotspot_jax.train.restore import TrainedModel

    model = build_model({"run": {"arch": "tiny_cnn_test"}})
    variables = init_variables(model, jax.random.PRNGKey(0), 16)
    tm = TrainedModel(arch="tiny_cnn_test", image_size=16, config={"run": {"arch": "tiny_cnn_test"}}, manifest=None,
                      model=model, variables=variables, checkpoint=tmp_path / "best" / "1")
    images = _batch(n=5, seed=4)[0][0]
    flipped = tm.with_tta("flips")
    assert tm.config["run"].get("tta") is None and flipped.config["run"]["tta"] == "flips"
    want = np.mean([tm.predict_proba(np.asarray(v)) for v in steps.tta_views(jnp.asarray(images), "flips")], axis=0)
    np.testing.assert_allclose(flipped.predict_proba(images, batch_size=2), want, rtol=1e-5, atol=1e-6)


def test_predict_script_path_scores_like_the_run_with_flips_and_5_3_input(tmp_path):
    from PIL import Image

    from hotspot_jax.predict import collect_images, predict_sources
    from hotspot_jax.train.restore import TrainedModel

    model = build_model({"run": {"arch": "tiny_cnn_test"}})
    variables = init_variables(model, jax.random.PRNGKey(0), (27, 16))
    run = {"arch": "tiny_cnn_test", "tta": "flips", "aspect": "source"}
    tm = TrainedModel(arch="tiny_cnn_test", image_size=16, config={"run": run}, manifest=None, model=model,
                      variables=variables, checkpoint=tmp_path / "best" / "1")
    images = _batch(n=4, seed=6)[0][0]
    for k, im in enumerate(images):
        Image.fromarray(im[..., 0]).save(tmp_path / f"{k}.png")
    result = predict_sources(tm, collect_images([str(tmp_path)]), batch_size=3)
    order = [int(n.rsplit("/", 1)[-1].split(".")[0]) for n in result.names]
    np.testing.assert_allclose(result.probs, tm.predict_proba(images[order]), rtol=1e-4, atol=1e-6)
