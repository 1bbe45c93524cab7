"""Self-supervised contrastive runs (hotspot_jax.train.contrastive): the NT-Xent loss against a plain reference, the
crop view, what a contrastive configuration refuses, and a tiny run that learns, is read back and starts a
supervised run with a new head."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers the tiny_cnn_test architecture)
from test_train_tiny import TINY, fast_compile  # noqa: F401  (fixture)
from hotspot_jax.errors import ConfigError
from hotspot_jax.train import contrastive, levers
from hotspot_jax.train.config import TrainConfig


def _reference_nt_xent(z, t, valid=None):
    """NT-Xent written out view by view (SimCLR's equation 1)."""
    z = np.asarray(z, np.float64)
    n = len(z)
    b = n // 2
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    ok = np.ones(n, bool) if valid is None else np.concatenate([valid, valid])
    losses, hits = np.zeros(n), np.zeros(n)
    for i in range(n):
        if not ok[i]:
            continue
        others = [j for j in range(n) if j != i and ok[j]]
        sims = {j: z[i] @ z[j] / t for j in others}
        p = (i + b) % n
        losses[i] = -sims[p] + np.log(sum(np.exp(s) for s in sims.values()))
        hits[i] = float(max(sims, key=sims.get) == p)
    return losses, hits


def test_nt_xent_is_simclrs_loss_and_padding_takes_no_part():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 5)).astype(np.float32)
    loss, hit = contrastive.nt_xent(jnp.asarray(z), 0.5)
    ref_loss, ref_hit = _reference_nt_xent(z, 0.5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_array_equal(hit, ref_hit)
    valid = np.array([True, True, False, True])
    loss, hit = contrastive.nt_xent(jnp.asarray(z), 0.5, jnp.asarray(valid))
    ref_loss, ref_hit = _reference_nt_xent(z, 0.5, valid)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_array_equal(hit, ref_hit)
    # a padding row equal to a real image's views changes nothing for the valid rows
    z2 = z.copy()
    z2[2], z2[6] = z[0], z[4]
    loss2, _ = contrastive.nt_xent(jnp.asarray(z2), 0.5, jnp.asarray(valid))
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    # identical partners far from the rest: the loss is small and every view finds its partner
    pairs = np.concatenate([np.eye(4, 5) * 10, np.eye(4, 5) * 10])
    loss, hit = contrastive.nt_xent(jnp.asarray(pairs), 0.1)
    assert float(loss.max()) < 1e-3 and hit.tolist() == [1.0] * 8


def test_the_crop_view_keeps_shape_and_range_and_a_full_crop_is_the_image(monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 40, 24, 1), dtype=np.uint8)
    out = levers.online_augment_fn("crop-flip-jitter")(jnp.asarray(images), jax.random.PRNGKey(0))
    assert out.shape == images.shape and out.dtype == jnp.uint8
    assert not np.array_equal(np.asarray(out), images)
    monkeypatch.setattr(levers, "CROP_AREA", (1.0, 1.0))
    monkeypatch.setattr(levers, "CROP_ASPECT", (1.0, 1.0))
    whole = levers._crop(jnp.asarray(images[0]), jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(whole), images[0])
    # a quarter of the area at the image's aspect: half the height and half the width, each enlarged x2, so a
    # ramp along one axis keeps half its rise over the output and stays flat along the other axis
    monkeypatch.setattr(levers, "CROP_AREA", (0.25, 0.25))
    rows = np.broadcast_to((np.arange(40) * 5)[:, None, None], (40, 24, 1)).astype(np.uint8)
    cols = np.broadcast_to((np.arange(24) * 10)[None, :, None], (40, 24, 1)).astype(np.uint8)
    for key in range(3):
        r = np.asarray(levers._crop(jnp.asarray(rows), jax.random.PRNGKey(key))).astype(int)[..., 0]
        c = np.asarray(levers._crop(jnp.asarray(cols), jax.random.PRNGKey(key))).astype(int)[..., 0]
        assert (r == r[:, :1]).all() and (c == c[:1]).all()
        assert abs((r[-1, 0] - r[0, 0]) - 5 * 39 / 2) <= 2 and abs((c[0, -1] - c[0, 0]) - 10 * 23 / 2) <= 2
        assert 0 <= r[0, 0] <= 5 * 20 and 0 <= c[0, 0] <= 10 * 12  # the crop starts inside the first half


@pytest.mark.parametrize("options,match", [
    ({}, "give --online-augment"),
    ({"online_augment": "flip", "label_smoothing": 0.1}, "--label-smoothing"),
    ({"online_augment": "flip", "mixup_alpha": 0.2}, "--mixup-alpha"),
    ({"online_augment": "flip", "tta": "flips"}, "--tta"),
    ({"online_augment": "flip", "batch_size": 1}, "--batch-size >= 2"),
    ({"online_augment": "flip", "projection_dim": 1}, "--projection-dim"),
    ({"online_augment": "flip", "contrastive_temperature": 0.0}, "--contrastive-temperature"),
    ({"online_augment": "flip", "projection_hidden": 1}, "--projection-hidden"),
    ({"online_augment": "flip", "no_anomaly_ratio": 2.0}, "--no-anomaly-ratio"),
    ({"online_augment": "flip", "no_anomaly_pools": "fixed", "pool_no_anomaly": 100}, "--pool-no-anomaly"),
    ({"online_augment": "flip", "cv_fold": "1/5"}, "--cv-fold"),
])
def test_a_contrastive_configuration_refuses_what_needs_labels_or_one_view(options, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(arch=TINY, objective="contrastive", workdir=str(tmp_path / "w"), **options).resolve()
    for option in ({"projection_dim": 64}, {"projection_hidden": 64}):
        with pytest.raises(ConfigError, match="is for a contrastive run"):
            TrainConfig(arch=TINY, workdir=str(tmp_path / "w"), **option).resolve()
    with pytest.raises(ConfigError, match="unknown --objective"):
        TrainConfig(arch=TINY, objective="byol", workdir=str(tmp_path / "w")).resolve()
    cfg = TrainConfig(arch=TINY, objective="contrastive", online_augment="flip", workdir=str(tmp_path / "w")).resolve()
    assert (cfg.projection_dim, cfg.contrastive_temperature) == (contrastive.PROJECTION_DIM, contrastive.TEMPERATURE)


def test_the_contrastive_step_learns_to_find_each_images_partner(fast_compile):
    """Sixteen images that differ in brightness, views by flips and shifts: 40 steps lower NT-Xent well below its
    start and every view finds its partner (the labels, all 0, are not read)."""
    from test_train_tiny import TINY_NO_DROPOUT

    from hotspot_jax.train import step as steps
    from hotspot_jax.train.loop import replicate
    from hotspot_jax.train.optimizer import sgd_momentum
    from hotspot_jax.train.restore import build_model
    from hotspot_jax.train.state import create_state, init_variables

    devices = jax.local_devices()[:1]
    model = build_model({"run": {"arch": TINY_NO_DROPOUT, "objective": "contrastive", "projection_dim": 16}},
                        bn_axis_name=steps.AXIS)
    tx = sgd_momentum(0.1)
    rep = replicate(create_state(init_variables(model, jax.random.PRNGKey(0), 16), tx), devices)
    step = steps.make_train_step(model, tx, 16, devices, augment=levers.online_augment_fn("flip-shift"),
                                 contrastive_temperature=0.2)
    rng = np.random.default_rng(0)
    images = (np.arange(16)[:, None, None, None] * 15 + rng.integers(0, 16, (16, 40, 24, 1))).astype(np.uint8)[None]
    history = []
    for i in range(40):
        rep, m = step(rep, images, np.zeros((1, 16), np.int32), jax.random.PRNGKey(i))
        history.append((float(m["loss"][0]), float(m["accuracy"][0])))
    assert history[-1][0] < 0.7 * history[0][0] and history[-1][1] == 1.0
    with pytest.raises(ValueError, match="needs an online augmentation"):
        steps.make_train_step(model, tx, 16, devices, contrastive_temperature=0.2)


def test_a_tiny_contrastive_run_learns_is_read_back_and_starts_a_supervised_run(tmp_path, fast_compile):
    """Two epochs on the classes12 leave-out split of fake images (noise: nothing to learn, see the test above for
    learning): the run writes a validation-only test_metrics.json, refuses evaluation as a classifier, and a hotspot run started from
    it keeps its backbone and draws a new head even when the class count happens to equal the projection size."""
    from test_reproduce_levers import fake_dataset

    from hotspot_jax.train.loop import train
    from hotspot_jax.train.restore import load_trained, require_classifier

    data = fake_dataset({"Hot-Spot": 30, "Hot-Spot-Multi": 30, "No-Anomaly": 200, "Cell": 40}, seed=3)
    ssl = TrainConfig(arch=TINY, epochs=2, batch_size=16, lr=0.05, image_size=16, task="classes12",
                      leave_out="hotspot", objective="contrastive", online_augment="crop-flip-jitter",
                      projection_dim=2, workdir=str(tmp_path / "ssl"))
    result = train(ssl, progress=False, log=lambda m: None, dataset=data)
    manifest = json.loads((tmp_path / "ssl" / "manifest.json").read_text())
    # originals only: Cell (under 300 training images) would get x4 offline copies in a supervised classes12 run
    assert manifest["config"]["augment_classes"] == [] and manifest["counts"]["train_augmented"] == \
        manifest["counts"]["train"] and not any("@" in i for i in manifest["splits"]["train"])
    history = [json.loads(line) for line in (tmp_path / "ssl" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and "val_macro_f1" not in history[0]
    tm_json = json.loads((tmp_path / "ssl" / "test_metrics.json").read_text())
    assert tm_json["objective"] == "contrastive" and "test" not in tm_json
    assert tm_json["val"]["views"] == 2 * tm_json["val"]["n"] and tm_json["val"]["loss"] > 0
    assert result.test_metrics == tm_json
    assert all(np.isfinite([h["train_loss"], h["val_loss"], h["val_accuracy"]]).all() for h in history)
    source = load_trained(tmp_path / "ssl")
    assert source.variables["params"]["fc"]["kernel"].shape[-1] == 2
    with pytest.raises(ConfigError, match="self-supervised contrastive run"):
        require_classifier(source, "be evaluated")
    target = TrainConfig(arch=TINY, epochs=1, batch_size=16, lr=0.01, image_size=16, init_from=str(tmp_path / "ssl"),
                         workdir=str(tmp_path / "hot"))
    train(target, progress=False, log=lambda m: None, dataset=data)
    config = json.loads((tmp_path / "hot" / "config.json").read_text())
    assert "self-supervised (contrastive" in config["initialisation"] and config["initialisation"].endswith("new head")
    from hotspot_jax.train.loop import init_from_run
    from hotspot_jax.train.restore import build_model

    cfg = target.resolve()
    model = build_model({"run": cfg.to_dict(), "classes": ["No-Anomaly", "Hotspot"]})
    start = init_from_run(cfg, model, jax.random.PRNGKey(9), 2)
    np.testing.assert_array_equal(start["params"]["conv1"]["kernel"], source.variables["params"]["conv1"]["kernel"])
    assert not np.array_equal(start["params"]["fc"]["kernel"], source.variables["params"]["fc"]["kernel"])


def test_an_mlp_projection_is_drawn_on_top_and_left_behind_by_the_run_it_starts(tmp_path, fast_compile):
    """``projection_hidden``: the network's last layer gives the hidden width, ReLU, then ``projection`` to
    ``projection_dim``; one epoch of a tiny run; a supervised run started from it takes the network's weights (not
    the projection's) and draws its own head."""
    from test_reproduce_levers import fake_dataset

    from hotspot_jax.train.loop import init_from_run, initial_variables, train
    from hotspot_jax.train.restore import abstract_variables, build_model, load_trained

    model = build_model({"run": {"arch": TINY, "objective": "contrastive", "projection_dim": 3,
                                 "projection_hidden": 10}})
    assert isinstance(model, contrastive.ProjectedNetwork)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 1)), train=False)
    assert variables["params"]["network"]["fc"]["kernel"].shape[-1] == 10
    assert variables["params"]["projection"]["kernel"].shape == (10, 3)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 1))
    mlp_config = {"run": {"objective": "contrastive", "projection_hidden": 10}}
    hidden = model.network.apply(contrastive.network_variables(mlp_config, variables), x, train=False)
    p = variables["params"]["projection"]
    np.testing.assert_allclose(model.apply(variables, x, train=False), jax.nn.relu(hidden) @ p["kernel"] + p["bias"],
                               rtol=1e-5, atol=1e-6)
    data = fake_dataset({"Hot-Spot": 30, "Hot-Spot-Multi": 30, "No-Anomaly": 200, "Cell": 40}, seed=3)
    ssl = TrainConfig(arch=TINY, epochs=1, batch_size=16, lr=0.05, image_size=16, task="classes12",
                      leave_out="hotspot", objective="contrastive", online_augment="crop-flip-jitter",
                      projection_dim=3, projection_hidden=10, workdir=str(tmp_path / "ssl"))
    train(ssl, progress=False, log=lambda m: None, dataset=data)
    source = load_trained(tmp_path / "ssl")
    assert set(source.variables["params"]) == {"network", "projection"}
    target = TrainConfig(arch=TINY, epochs=1, batch_size=16, lr=0.01, image_size=16, init_from=str(tmp_path / "ssl"),
                         workdir=str(tmp_path / "hot")).resolve()
    head = build_model({"run": target.to_dict(), "classes": ["No-Anomaly", "Hotspot"]})
    start = init_from_run(target, head, jax.random.PRNGKey(9), 2)
    assert "projection" not in start["params"] and start["params"]["fc"]["kernel"].shape[-1] == 2
    np.testing.assert_array_equal(start["params"]["conv1"]["kernel"],
                                  source.variables["params"]["network"]["conv1"]["kernel"])
    np.testing.assert_array_equal(start["batch_stats"]["bn1"]["mean"],
                                  source.variables["batch_stats"]["network"]["bn1"]["mean"])
    # another MLP contrastive run started from it keeps the backbone, and draws its head and projection afresh
    again = TrainConfig(arch=TINY, epochs=1, batch_size=16, lr=0.05, image_size=16, task="classes12",
                        leave_out="hotspot", objective="contrastive", online_augment="crop-flip-jitter",
                        projection_dim=3, projection_hidden=10, init_from=str(tmp_path / "ssl"),
                        workdir=str(tmp_path / "ssl2")).resolve()
    again_model = build_model({"run": again.to_dict()})
    begun = initial_variables(again, again_model, jax.random.PRNGKey(9), None)
    for collection, layer, leaf in (("params", "conv1", "kernel"), ("batch_stats", "bn1", "var")):
        np.testing.assert_array_equal(begun[collection]["network"][layer][leaf],
                                      source.variables[collection]["network"][layer][leaf])
    for new_layer in (begun["params"]["network"]["fc"], begun["params"]["projection"]):
        assert not any(np.array_equal(new_layer["kernel"], old["kernel"]) for old in
                       (source.variables["params"]["network"]["fc"], source.variables["params"]["projection"]))
    assert jax.tree.structure(begun) == jax.tree.structure(abstract_variables(again_model, 16))


def test_an_mlp_projection_on_a_network_without_batchnorm_keeps_the_checkpoints_tree():
    """SqueezeNet has no BatchNorm: its variables have no ``batch_stats`` to nest, and the start of a run must have
    the tree a checkpoint is restored into (an empty collection nested under ``network`` would not restore)."""
    from hotspot_jax.train.restore import abstract_variables, build_model
    from hotspot_jax.train.state import init_variables

    model = build_model({"run": {"arch": "squeezenet1_1", "objective": "contrastive", "projection_dim": 8,
                                 "projection_hidden": 16}})
    start = contrastive.with_projection(init_variables(model.network, jax.random.PRNGKey(0), 64),
                                        init_variables(model, jax.random.PRNGKey(0), 64))
    assert start["batch_stats"] == {} and set(start["params"]) == {"network", "projection"}
    assert jax.tree.structure(start) == jax.tree.structure(abstract_variables(model, 64))


def test_recipe_keys_chain_simclr_then_in_domain_pretraining_then_the_run(tmp_path, fast_compile):
    """``ssl_epochs`` through the grid runner: a contrastive run on the shared pretraining pool (no image any seed's
    hotspot split validates or tests on) starts the classes12 pretraining, which starts the hotspot run; the no-leak
    check walks the chain; the summary counts both pretrainings; committed recipes keep their fingerprints."""
    from test_reproduce_levers import fake_dataset

    from hotspot_jax.data import SplitManifest
    from hotspot_jax.data.tasks import check_no_leak
    from hotspot_jax.reproduce.lever_table import _settings
    from hotspot_jax.reproduce.recipes import ADDED_LATER, RECIPES, Recipe, with_overrides
    from hotspot_jax.reproduce.runner import pretrain_dir, result_path, run_dir, run_grid, ssl_dir
    from hotspot_jax.train.loop import init_from_chain, train

    defaults = Recipe(name="", description="")  # left out of fingerprints at their defaults: committed runs stay
    keys = ("ssl_epochs", "ssl_lr", "ssl_batch_size", "ssl_projection_hidden")
    assert {k: getattr(defaults, k) for k in keys} == {k: ADDED_LATER[k] for k in keys}
    assert RECIPES["best-v2"].fingerprint() != with_overrides(RECIPES["best-v2"], ["ssl_epochs=1"]).fingerprint()
    for bad, match in ((["ssl_epochs=5"], "pretrain_pool=shared"),
                       (["ssl_epochs=5", "formula_epochs=5", "pretrain_pool=shared", "no_anomaly_pools=fixed"],
                        "use one of formula_epochs and ssl_epochs")):
        with pytest.raises(ConfigError, match=match):
            with_overrides(RECIPES["best"], bad)
    data = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 14, "No-Anomaly": 900, "Cell": 40, "Diode": 30}, seed=7)
    recipe = Recipe(name="tiny-ssl", description="test", image_size=16, epochs=1, batch_size=16, lr=0.01,
                    online_augment="flip", pretrain_epochs=1, no_anomaly_pools="fixed", pretrain_pool="shared",
                    ssl_epochs=1, ssl_batch_size=32)
    calls = []

    def recording(cfg, **kw):
        calls.append((cfg.task, cfg.objective, cfg.leave_out, cfg.init_from))
        return train(cfg, **kw)

    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", dataset=data, progress=False,
              log=lambda m: None)
    assert run_grid(recipe, [TINY], [0], train_fn=recording, **kw)["done"] == [f"{TINY}-s0"]
    sdir, pdir = ssl_dir(tmp_path / "runs", recipe, TINY), pretrain_dir(tmp_path / "runs", recipe, TINY, 0)
    assert calls == [("classes12", "contrastive", "hotspot-any-seed", None),
                     ("classes12", "supervised", "hotspot-any-seed", str(sdir)),
                     (None, "supervised", None, str(pdir))]
    assert pdir.name.endswith("-from-simclr-16px-e1-lr0.1-b32")
    # the contrastive run trained and validated on the pretraining's training images only
    ssl_splits = json.loads((sdir / "manifest.json").read_text())["splits"]
    pre_splits = json.loads((pdir / "manifest.json").read_text())["splits"]
    assert set(ssl_splits["train"]) | set(ssl_splits["val"]) == set(pre_splits["train"])
    assert not set(ssl_splits["train"]) & set(ssl_splits["val"]) and not ssl_splits["test"]
    run_config = json.loads((run_dir(tmp_path / "runs", "tiny-ssl", TINY, 0) / "config.json").read_text())
    chain = init_from_chain(run_config["run"]["init_from_checkpoint"])
    assert [where for where, _ in chain] == [str(pdir), str(sdir)]
    check_no_leak(chain, SplitManifest.from_json(run_dir(tmp_path / "runs", "tiny-ssl", TINY, 0) / "manifest.json"))
    summary = json.loads(result_path(tmp_path / "results", "tiny-ssl", TINY, 0).read_text())
    assert summary["ssl_pretraining"]["settings"]["objective"] == "contrastive"
    assert summary["timing"]["pretrain_seconds"] == pytest.approx(
        summary["timing"]["ssl_seconds"] + summary["pretraining"]["train_seconds"])
    calls.clear()
    assert run_grid(recipe, [TINY], [0], train_fn=recording, **kw)["skipped"] == [f"{TINY}-s0"] and calls == []
    assert "SimCLR 1 ep (lr 0.1, batch 32)" in _settings({"recipe": recipe.to_dict()})
    # an MLP projection names its own SimCLR run, and reaches the run's config
    mlp = with_overrides(recipe, ["ssl_projection_hidden=64"])
    assert ssl_dir(tmp_path, mlp, TINY).name.endswith("-b32-mlp64") and mlp.fingerprint() != recipe.fingerprint()
    assert mlp.ssl_config(TINY, "w").projection_hidden == 64 and recipe.ssl_config(TINY, "w").projection_hidden is None
    assert "MLP 64" in _settings({"recipe": mlp.to_dict()})
    for bad, match in ((["ssl_projection_hidden=1"], "ssl_projection_hidden 0"),
                       (["ssl_projection_hidden=64", "ssl_epochs=0"], "give ssl_epochs too")):
        with pytest.raises(ConfigError, match=match):
            with_overrides(recipe, bad)


TWO_DEVICES = r"""
import json
import jax, numpy as np
jax.config.update("jax_disable_most_optimizations", True)
assert jax.local_device_count() == 2, jax.devices()
from test_train_tiny import TinyNet
from hotspot_jax.data import ArraySplit
from hotspot_jax.train import contrastive
from hotspot_jax.train.batching import shard
from hotspot_jax.train.loop import replicate
from hotspot_jax.train.optimizer import sgd_momentum
from hotspot_jax.train.state import create_state, init_variables
from hotspot_jax.train.step import make_train_step

model = TinyNet(num_classes=6, bn_axis_name="batch", dropout_rate=0.0)
tx = sgd_momentum(0.1, 0.9, 1e-3)
same = lambda x, k: x[:, ::-1]  # views independent of the keys (which fold in the device index)
state0 = create_state(init_variables(model, jax.random.PRNGKey(0), 12), tx)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (3, 8, 40, 24, 1), dtype=np.uint8)
val = ArraySplit(rng.integers(0, 256, (10, 40, 24, 1), dtype=np.uint8), np.zeros(10, np.int32),
                 np.arange(10).astype(str), ("a", "b"))
out = {}
for n in (1, 2):
    devices = jax.devices()[:n]
    step = make_train_step(model, tx, 12, devices, augment=same, contrastive_temperature=0.5)
    rep = replicate(state0, devices)
    losses = []
    for s in range(3):
        rep, m = step(rep, shard(images[s], n), shard(np.zeros(8, np.int32), n), jax.random.PRNGKey(1))
        losses.append(float(m["loss"][0]))
    ev = contrastive.evaluate_views(contrastive.make_eval_step(model, 12, 0.5, same, devices), rep, val, 4, devices,
                                    "v", False)
    leaves = [np.asarray(x)[0] for x in jax.tree.leaves({"p": rep["params"], "b": rep["batch_stats"]})]
    out[n] = {"losses": losses, "leaves": leaves, "eval": ev}
diff = max(float(np.abs(a - b).max()) for a, b in zip(out[1]["leaves"], out[2]["leaves"]))
print(json.dumps({"diff": diff, "losses": [out[1]["losses"], out[2]["losses"]],
                  "eval": [out[1]["eval"], out[2]["eval"]]}))
"""


def test_two_devices_see_the_global_batch_as_one_device_does():
    """The negatives are the global batch's (all_gather): with views that do not depend on the keys, 1 and 2
    devices give the same losses, weights and validation reading (10 images in batches of 4: the last one padded)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(r["losses"][0], r["losses"][1], rtol=1e-5)
    assert r["diff"] < 1e-5, r
    one, two = r["eval"]
    assert one["views"] == two["views"] == 20
    assert abs(one["loss"] - two["loss"]) < 1e-5 and one["accuracy"] == two["accuracy"]
