"""The weight-average lever (``ema_decay``, hotspot_jax.train.ema): the warmup formula by hand, off by default
(no ``"ema"`` in the state), never feeding back into training, evaluated by validation, the best checkpoint,
``load_trained`` (so evaluate.py and predict.py) and a full-state checkpoint, and exact across an interruption."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers the tiny_cnn_test architecture)
from interrupt_fakes import interrupt_after_reads
from test_train_tiny import fast_compile  # noqa: F401  (fixture)
from xla_fast_compile import optimizations_off
from hotspot_jax.cli import run_cli
from hotspot_jax.data import CLASS_NAMES, ModuleImages
from hotspot_jax.errors import ConfigError
from hotspot_jax.reproduce.recipes import RECIPES, with_overrides
from hotspot_jax.train import ema
from hotspot_jax.train import step as steps
from hotspot_jax.train.config import TrainConfig, identity_differences
from hotspot_jax.train.optimizer import sgd_momentum
from hotspot_jax.train.restore import build_model
from hotspot_jax.train.state import create_state, init_variables

DEVICES = jax.local_devices()[:1]
DECAY = 0.9
TIMING_KEYS = ("train_seconds", "images_per_second")


# ------------------------------------------------------------------------------------------- the update
def test_decay_warms_up_and_the_update_is_the_hand_computed_average():
    assert float(ema.decay_at(0.99, 0)) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert float(ema.decay_at(0.99, 5)) == pytest.approx(6 / 15)
    assert float(ema.decay_at(0.99, 1000)) == pytest.approx(0.99)  # 1001 / 1010 > 0.99: capped
    assert float(ema.decay_at(0.5, 20)) == pytest.approx(0.5)
    old = {"params": {"w": jnp.array([1.0, 2.0])}, "batch_stats": {"mean": jnp.array([4.0])}}
    new = {"params": {"w": jnp.array([3.0, -2.0])}, "batch_stats": {"mean": jnp.array([0.0])}}
    out = ema.update(old, new, 0.99, 3)  # d = 4 / 13
    d = 4 / 13
    np.testing.assert_allclose(out["params"]["w"], [d * 1 + (1 - d) * 3, d * 2 + (1 - d) * -2], rtol=1e-6)
    np.testing.assert_allclose(out["batch_stats"]["mean"], [d * 4], rtol=1e-6)
    state = {"step": 0, "params": 1, "batch_stats": 2, "opt_state": 3}
    assert ema.evaluated_variables(state) == {"params": 1, "batch_stats": 2}
    assert ema.evaluated_variables({**state, "ema": "avg"}) == "avg"


def _batch(seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (1, 8, 40, 24, 1), dtype=np.uint8), rng.integers(0, 2, (1, 8)).astype(np.int32))


def test_off_by_default_and_the_average_never_changes_training(fast_compile):
    from hotspot_jax.train.loop import replicate, unreplicate

    assert TrainConfig(arch="tiny_cnn_test").ema_decay == 0.0 and RECIPES["best"].ema_decay == 0.0
    model = build_model({"run": {"arch": "tiny_cnn_test"}}, bn_axis_name=steps.AXIS)
    tx = sgd_momentum(0.1, 0.9)
    variables = init_variables(model, jax.random.PRNGKey(0), 16)
    plain_state, ema_state = create_state(variables, tx), create_state(variables, tx, DECAY)
    assert set(plain_state) == {"step", "params", "batch_stats", "opt_state"}  # the state of before the lever
    assert set(ema_state) == set(plain_state) | {"ema"}
    plain = steps.make_train_step(model, tx, 16, DEVICES)
    off = steps.make_train_step(model, tx, 16, DEVICES, ema_decay=0.0)
    with_ema = steps.make_train_step(model, tx, 16, DEVICES, ema_decay=DECAY)
    key = jax.random.PRNGKey(1)
    a, b, c = (replicate(s, DEVICES) for s in (plain_state, plain_state, ema_state))
    want = variables  # the average by hand, from the starting weights
    for t in range(2):
        images, labels = _batch(t)
        a, _ = plain(a, images, labels, key)
        b, _ = off(b, images, labels, key)
        c, _ = with_ema(c, images, labels, key)
        ha, hb, hc = unreplicate(a), unreplicate(b), unreplicate(c)
        assert "ema" not in ha and "ema" not in hb
        for x, y, z in zip(jax.tree.leaves(ha), jax.tree.leaves(hb), jax.tree.leaves({k: hc[k] for k in ha})):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(x, z)  # the weights follow the same path with the average kept
        d = min(DECAY, (1 + t) / (10 + t))
        want = jax.tree.map(lambda e, n: d * np.asarray(e) + (1 - d) * np.asarray(n), want,
                            {"params": hc["params"], "batch_stats": hc["batch_stats"]})
        for x, y in zip(jax.tree.leaves(hc["ema"]), jax.tree.leaves(want)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert not np.allclose(hc["ema"]["params"]["fc"]["kernel"], hc["params"]["fc"]["kernel"])
    # the evaluation step of a state with an average evaluates the average, not the weights
    images, labels = _batch(5)
    probs, _, _ = steps.make_eval_step(model, 16, DEVICES)(c, images, labels)
    single = build_model({"run": {"arch": "tiny_cnn_test"}})
    from hotspot_jax.train.restore import _predict_fn

    np.testing.assert_allclose(probs[0], _predict_fn(single, 16)(hc["ema"], images[0]), rtol=1e-5, atol=1e-6)
    raw = {"params": hc["params"], "batch_stats": hc["batch_stats"]}
    assert not np.allclose(probs[0], _predict_fn(single, 16)(raw, images[0]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan", "1.5"])
def test_bad_ema_decay_is_one_error_line(capsys, tmp_path, value):
    from hotspot_jax.train.cli import main

    code = run_cli(main, ["--arch", "tiny_cnn_test", "--ema-decay", value, "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "--ema-decay must be in [0, 1)" in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "w").exists()


def test_ema_decay_is_part_of_the_identity_and_a_recipe_setting():
    base = TrainConfig(arch="tiny_cnn_test").resolve()
    stored = {k: v for k, v in base.to_dict().items() if k != "ema_decay"}  # a config of before the lever
    assert identity_differences(stored, base) == []
    with_ema = dataclasses.replace(base, ema_decay=0.99)
    assert identity_differences(stored, with_ema) == ["ema_decay: 0.0 -> 0.99"]
    best = RECIPES["best"]
    lever = with_overrides(best, ["ema_decay=0.99"])
    assert lever.lever_options()["ema_decay"] == 0.99 and "ema_decay" not in best.lever_options()
    assert lever.train_config("tiny_cnn_test", 0, "/tmp/w").ema_decay == 0.99
    assert lever.fingerprint() != best.fingerprint()
    assert dataclasses.replace(best, ema_decay=0.0).fingerprint() == best.fingerprint()
    from hotspot_jax.reproduce.lever_table import _settings

    assert "EMA 0.99" in _settings({"recipe": lever.to_dict(), "train_config": {}})
    assert "EMA" not in _settings({"recipe": best.to_dict(), "train_config": {}})


# ---------------------------------------------------------------------------------- a run, end to end
def _dataset():
    rng = np.random.default_rng(7)
    sizes = {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100}
    labels = np.concatenate([np.full(n, CLASS_NAMES.index(c), np.int32) for c, n in sizes.items()])
    labels = labels[rng.permutation(len(labels))]
    images = rng.integers(0, 256, size=(len(labels), 40, 24, 1), dtype=np.uint8)
    return ModuleImages(images=images, labels=labels, ids=np.arange(len(labels)).astype(str), metadata_sha256="e" * 64)


def _cfg(workdir):
    return TrainConfig(arch="tiny_cnn_test", epochs=3, batch_size=8, lr=0.05, image_size=16, eval_batch_size=16,
                       limit_train=32, limit_eval=32, workdir=str(workdir), seed=2, keep=3, ema_decay=DECAY)


def _full_state(workdir, step):
    """The saved training state of ``checkpoints/<step>``, EMA included."""
    from hotspot_jax.train.checkpoint import RunCheckpoints
    from hotspot_jax.train.levers import make_optimizer
    from hotspot_jax.train.restore import abstract_variables, read_config

    config = read_config(workdir)
    tx = make_optimizer(config["run"], config["steps_per_epoch"])
    target = abstract_variables(build_model(config), 16)
    ckpts = RunCheckpoints(workdir, read_only=True)
    try:
        return ckpts.restore(step, jax.eval_shape(lambda v: create_state(v, tx, DECAY), target))[0]
    finally:
        ckpts.close()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-epoch EMA run (4 steps an epoch: checkpoints 4, 8, 12) and its dataset."""
    from hotspot_jax.train.loop import train

    with optimizations_off():
        data = _dataset()
        run = tmp_path_factory.mktemp("ema") / "straight"
        train(_cfg(run), progress=False, log=lambda m: None, dataset=data)
        yield data, run


def _rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_validation_best_checkpoint_and_restored_models_use_the_average(straight):
    from hotspot_jax.train.loop import load_data
    from hotspot_jax.train.restore import load_trained

    data, run = straight
    tm = load_trained(run)  # what evaluate.py and predict.py load: the best checkpoint
    step = int(tm.checkpoint.name)
    state = _full_state(run, step)
    assert "ema" in state
    for x, y in zip(jax.tree.leaves(tm.variables), jax.tree.leaves(state["ema"])):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(state["ema"]["params"]["fc"]["kernel"], state["params"]["fc"]["kernel"])
    latest = load_trained(run / "checkpoints" / "12")  # a full-state checkpoint gives its average too
    for x, y in zip(jax.tree.leaves(latest.variables), jax.tree.leaves(_full_state(run, 12)["ema"])):
        np.testing.assert_array_equal(x, y)
    # the epoch's validation loss is the average's, not the weights'
    _, arrays = load_data(_cfg(run).resolve(), lambda m: None, data, progress=False)
    val = arrays["val"]
    row = next(r for r in _rows(run) if r["step"] == step)

    def loss(model):
        p = model.predict_class_proba(val.images)
        return float(np.mean(-np.log(p[np.arange(len(val)), val.labels])))

    assert row["best"] and row["val_loss"] == pytest.approx(loss(tm), rel=1e-5)
    raw = dataclasses.replace(tm, variables={"params": state["params"], "batch_stats": state["batch_stats"]},
                              _predict=None)
    assert row["val_loss"] != pytest.approx(loss(raw), rel=1e-5)


def test_interrupted_and_resumed_ema_run_equals_the_uninterrupted_one(straight, tmp_path, monkeypatch):
    from hotspot_jax.train import loop
    from hotspot_jax.train.restore import load_trained

    data, run = straight

    monkeypatch.setattr(loop, "InterruptFlag", interrupt_after_reads(7))  # mid-epoch 2
    broken = tmp_path / "broken"
    first = loop.train(_cfg(broken), progress=False, log=lambda m: None, dataset=data)
    assert first.interrupted and first.checkpoint == broken / "checkpoints" / "6"  # mid-epoch 2
    monkeypatch.undo()
    lines: list[str] = []
    loop.train(_cfg(broken), progress=False, log=lines.append, dataset=data)
    assert any(line.startswith("resuming from") and "checkpoints/6" in line for line in lines), lines
    assert _rows(run) == _rows(broken)
    a, b = _full_state(run, 12), _full_state(broken, 12)
    assert set(a) == set(b) and "ema" in a
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(load_trained(run).variables), jax.tree.leaves(load_trained(broken).variables)):
        np.testing.assert_array_equal(x, y)
    ta, tb = (json.loads((r / "test_metrics.json").read_text()) for r in (run, broken))
    assert ta["test"] == tb["test"] and ta["test_realistic"] == tb["test_realistic"]


def test_a_run_started_from_an_ema_run_starts_its_average_at_the_evaluated_weights(straight, tmp_path):
    """``--init-from`` an EMA run takes that run's evaluated (averaged) variables, and a new average starts there."""
    from hotspot_jax.train.loop import init_from_run
    from hotspot_jax.train.restore import load_trained

    data, run = straight
    cfg = dataclasses.replace(_cfg(tmp_path / "next"), init_from=str(run)).resolve()
    model = build_model({"run": cfg.to_dict()}, bn_axis_name=steps.AXIS)
    start = init_from_run(cfg, model, jax.random.PRNGKey(0), 2)
    state = create_state(start, sgd_momentum(0.1), cfg.ema_decay)
    for x, y, z in zip(jax.tree.leaves(load_trained(run).variables), jax.tree.leaves(start),
                       jax.tree.leaves(state["ema"])):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


def test_a_damaged_best_checkpoint_is_rebuilt_with_the_average(straight, tmp_path):
    """checkpoint.check_best rebuilds ``best/`` from the full state: the average, as the run saved it."""
    import shutil

    from hotspot_jax.train.loop import train
    from hotspot_jax.train.restore import load_trained

    data, run = straight
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (best,) = [p for p in (broken / "best").iterdir() if p.name.isdigit()]
    (best / "variables" / "_METADATA").write_bytes(b"")
    lines: list[str] = []
    train(_cfg(broken), progress=False, log=lines.append, dataset=data)  # finished: only the final evaluation again
    assert any(line.startswith(f"rebuilt {best}") for line in lines), lines
    for x, y in zip(jax.tree.leaves(load_trained(run).variables), jax.tree.leaves(load_trained(broken).variables)):
        np.testing.assert_array_equal(x, y)
