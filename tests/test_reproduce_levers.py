"""The levers of the ``best`` recipe: learning-rate schedule, online augmentation, more No-Anomaly
training images, in-domain pretraining (a classes12 run with ``leave_out="hotspot"``), and the invariant
that no validation or test image of the split ever enters pretraining or training (on fake data and on
the real dataset's manifests)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from hotspot_jax.data import CLASS_NAMES, ModuleImages, ProtocolConfig, make_binary_split, materialize
from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.data.tasks import HELD_OUT, get_task, make_split, source_ids
from hotspot_jax.train import levers
from hotspot_jax.train.config import TrainConfig, identity_differences

SIZES = {"Hot-Spot": 249, "Hot-Spot-Multi": 246, "No-Anomaly": 10000, "Cell": 60, "Soiling": 20, "Diode": 30}


def fake_dataset(sizes=SIZES, seed=0) -> ModuleImages:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, CLASS_NAMES.index(c), np.int32) for c, n in sizes.items()])
    labels = labels[rng.permutation(len(labels))]
    images = rng.integers(0, 256, size=(len(labels), 40, 24, 1), dtype=np.uint8)
    return ModuleImages(images=images, labels=labels, ids=np.arange(len(labels)).astype(str), metadata_sha256="e" * 64)


def check_disjoint(ids, manifest, splits=HELD_OUT) -> None:
    """No id of ``ids`` (augmented copies ``id@op`` by their source) is in one of ``splits`` of ``manifest``."""
    held = set().union(*(manifest.splits.get(name, ()) for name in splits))
    leaked = source_ids(ids) & held
    if leaked:
        raise DataError(f"{len(leaked)} validation/test image(s) would enter training")


def pretrain_pool(dataset, seed: int) -> set[str]:
    """Every image of the in-domain pretraining of ``seed``: its classes12 leave-out split, train and val."""
    m = make_split(get_task("classes12"), dataset, seed, leave_out="hotspot")
    return set(m.splits["train"]) | set(m.splits["val"]) | set(m.splits["test"])


@pytest.fixture(scope="module")
def dataset():
    return fake_dataset()


# ------------------------------------------------------------------------------------------ schedule
def test_cosine_schedule_warms_up_peaks_and_ends_at_zero():
    lr = levers.make_schedule(0.01, "cosine", steps_per_epoch=10, epochs=5, warmup_epochs=1)
    assert float(lr(0)) == 0.0
    assert float(lr(5)) == pytest.approx(0.005)
    assert float(lr(10)) == pytest.approx(0.01)
    assert float(lr(30)) == pytest.approx(0.005, rel=1e-5)  # half-way through the 40 decay steps
    assert float(lr(50)) == pytest.approx(0.0, abs=1e-9)
    assert levers.make_schedule(0.001, "constant", 10, 5) == 0.001
    with pytest.raises(ConfigError, match="unknown --lr-schedule 'step'"):
        levers.make_schedule(0.1, "step", 10, 5)
    run = {"lr": 0.01, "lr_schedule": "cosine", "epochs": 5, "warmup_epochs": 1}
    assert levers.lr_at(run, 10, 10) == pytest.approx(0.01)


# ------------------------------------------------------------------------------ online augmentation
def test_online_flips_are_exact_flips_and_shifts_are_edge_replicated_crops():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 40, 24, 1), dtype=np.uint8)
    flip = levers.online_augment_fn("flip")
    out = np.asarray(jax.jit(flip)(images, jax.random.PRNGKey(3)))
    assert out.dtype == np.uint8 and out.shape == images.shape
    kinds = set()
    for x, y in zip(images, out):
        cands = {"id": x, "h": x[:, ::-1], "v": x[::-1, :], "hv": x[::-1, ::-1]}
        match = [k for k, c in cands.items() if np.array_equal(c, y)]
        assert match, "each output is one of the four flips of its input"
        kinds.add(match[0])
    assert len(kinds) >= 3  # random per image
    assert np.array_equal(out, np.asarray(flip(images, jax.random.PRNGKey(3))))  # a function of the key
    shift = levers.online_augment_fn("flip-shift")
    out = np.asarray(shift(images, jax.random.PRNGKey(5)))
    s = levers.MAX_SHIFT
    moved = 0
    for x, y in zip(images, out):
        found = False
        for flipped in (x, x[:, ::-1], x[::-1, :], x[::-1, ::-1]):
            pad = np.pad(flipped, ((s, s), (s, s), (0, 0)), mode="edge")
            for dy in range(2 * s + 1):
                for dx in range(2 * s + 1):
                    if np.array_equal(pad[dy:dy + 40, dx:dx + 24], y):
                        found = True
                        moved += (dy, dx) != (s, s)
                        break
                if found:
                    break
            if found:
                break
        assert found, "each output is a flipped, shifted, edge-replicated copy of its input"
    assert moved >= 8
    assert levers.online_augment_fn("none") is None
    with pytest.raises(ConfigError, match="unknown --online-augment"):
        levers.online_augment_fn("mixup")


def test_jitter_keeps_the_geometry_of_flip_shift_and_only_rescales_grey_levels_within_bounds():
    """flip-shift-jitter = a flip-shift (its own key) then, per image, (x - mean) * c + mean + b, rounded and
    clipped: every output is an affine map of one flipped, shifted copy of its input with c and b in bounds."""
    rng = np.random.default_rng(1)
    images = rng.integers(30, 226, size=(24, 40, 24, 1), dtype=np.uint8)
    jit = levers.online_augment_fn("flip-shift-jitter")
    out = np.asarray(jax.jit(jit)(images, jax.random.PRNGKey(7)))
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(out, np.asarray(jit(images, jax.random.PRNGKey(7))))  # a function of the key
    assert not np.array_equal(out, np.asarray(jit(images, jax.random.PRNGKey(8))))
    s = levers.MAX_SHIFT
    contrasts, offsets = [], []
    for x, y in zip(images, out):
        best = None
        for flipped in (x, x[:, ::-1], x[::-1, :], x[::-1, ::-1]):
            pad = np.pad(flipped, ((s, s), (s, s), (0, 0)), mode="edge").astype(np.float64)
            for dy in range(2 * s + 1):
                for dx in range(2 * s + 1):
                    src = pad[dy:dy + 40, dx:dx + 24].ravel()
                    a, b = np.polyfit(src, y.astype(np.float64).ravel(), 1)  # y ~ a * src + b
                    err = np.max(np.abs(a * src + b - y.ravel()))
                    if best is None or err < best[0]:
                        best = (err, a, b, src.mean())
        err, a, b, mean = best
        assert err <= 1.0, "each output is a rounded affine map of a flipped, shifted copy of its input"
        contrasts.append(a)
        offsets.append(b - mean * (1 - a))  # b = mean * (1 - c) + offset
    c = np.array(contrasts)
    assert np.all(c >= 1 / levers.MAX_CONTRAST - 0.02) and np.all(c <= levers.MAX_CONTRAST + 0.02)
    assert np.all(np.abs(offsets) <= levers.MAX_BRIGHTNESS + 1.0)
    assert c.std() > 0.03 and np.std(offsets) > 3  # drawn per image
    # clipped, not wrapped: a bright image stays bright
    white = np.full((8, 40, 24, 1), 250, np.uint8)
    assert np.asarray(jit(white, jax.random.PRNGKey(0))).min() >= 250 - levers.MAX_BRIGHTNESS - 1


def test_erase_is_flip_shift_then_one_rectangle_at_the_mean_in_about_half_the_images():
    """flip-shift-erase = a flip-shift (its own key) then, with probability ERASE_P, one axis-aligned rectangle of
    at most ERASE_AREA[1] of the image set to the image's rounded mean; everything else is the flip-shift's."""
    n = 200
    images = np.random.default_rng(3).integers(0, 256, size=(n, 40, 24, 1), dtype=np.uint8)
    key = jax.random.PRNGKey(5)
    erase = levers.online_augment_fn("flip-shift-erase")
    out = np.asarray(jax.jit(erase)(images, key))
    assert out.dtype == np.uint8 and out.shape == images.shape
    erased = 0
    for x, y, k in zip(images, out, jax.random.split(key, n)):
        k_geometry, _ = jax.random.split(k)
        moved = np.asarray(levers._flip_shift(x, k_geometry, levers.MAX_SHIFT))
        changed = np.argwhere(y != moved)
        if not len(changed):
            continue
        erased += 1
        (y0, x0, _), (y1, x1, _) = changed.min(0), changed.max(0) + 1
        fill = np.round(moved.astype(np.float64).mean())
        assert np.all(y[y0:y1, x0:x1] == fill), "the changed pixels form one rectangle at the image's mean"
        assert (y1 - y0) * (x1 - x0) <= 1.3 * levers.ERASE_AREA[1] * 40 * 24
    assert 0.35 * n < erased < 0.65 * n  # ERASE_P = 0.5, drawn per image
    assert np.array_equal(out, np.asarray(erase(images, key)))  # a function of the key, jit or not


def test_flip_shift_draws_are_unchanged_by_the_jitter_option():
    """Adding flip-shift-jitter must not change what flip-shift draws (committed runs resume bit-identically)."""
    images = np.random.default_rng(2).integers(0, 256, size=(6, 40, 24, 1), dtype=np.uint8)
    key = jax.random.PRNGKey(11)
    keys = jax.random.split(key, 6)
    by_hand = np.stack([np.asarray(levers._flip_shift(x, k, levers.MAX_SHIFT)) for x, k in zip(images, keys)])
    assert np.array_equal(np.asarray(levers.online_augment_fn("flip-shift")(images, key)), by_hand)


def test_pretrain_augment_changes_the_pretraining_alone_and_names_its_own_folder(tmp_path):
    from hotspot_jax.reproduce.recipes import RECIPES, with_overrides
    from hotspot_jax.reproduce.runner import pretrain_dir

    base = RECIPES["best-v2"]
    lever = with_overrides(base, ["pretrain_augment=flip-shift-jitter"])
    assert lever.name == "best-v2+pretrain_augment=flip-shift-jitter"
    assert base.pretrain_online_augment == "flip-shift" and lever.pretrain_online_augment == "flip-shift-jitter"
    assert base.pretrain_config("shufflenet", 0, "/p").online_augment == "flip-shift"
    assert lever.pretrain_config("shufflenet", 0, "/p").online_augment == "flip-shift-jitter"
    assert lever.train_config("shufflenet", 0, "/r").online_augment == "flip-shift"  # fine-tuning unchanged
    assert pretrain_dir(tmp_path, lever, "shufflenet", 0) != pretrain_dir(tmp_path, base, "shufflenet", 0)
    assert pretrain_dir(tmp_path, lever, "shufflenet", 0).name.endswith("-flip-shift-jitter-fixedpools")
    assert lever.fingerprint() != base.fingerprint()
    assert base.fingerprint() == dataclasses.replace(base, pretrain_augment=None).fingerprint()  # committed runs
    with pytest.raises(ConfigError, match="unknown pretrain_augment 'cutout'"):
        with_overrides(base, ["pretrain_augment=cutout"])


# --------------------------------------------------------------------------- more No-Anomaly images
def test_more_no_anomaly_only_takes_unused_images_and_leaves_val_and_test_alone(dataset):
    manifest = make_binary_split(dataset, ProtocolConfig(seed=1))
    arrays = materialize(dataset, manifest)
    new_manifest, new = levers.add_no_anomaly(dataset, manifest, dict(arrays), 2.0, seed=1)
    n_hot = int((arrays["train"].labels == 1).sum())
    assert n_hot == 1388
    assert len(new["train"]) == len(arrays["train"]) + 1388
    assert (new["train"].labels == 0).sum() == 2 * 1388
    extra = set(new["train"].ids.tolist()) - set(arrays["train"].ids.tolist())
    assert len(extra) == 1388 and all(dataset.labels[int(i)] == CLASS_NAMES.index("No-Anomaly") for i in extra)
    for split in ("val", "test"):
        assert new_manifest.splits[split] == manifest.splits[split]
        assert np.array_equal(new[split].ids, arrays[split].ids)
        assert not extra & set(manifest.splits[split])
    assert len(new["test_realistic"]) == len(arrays["test_realistic"]) - 1388
    assert not extra & set(new_manifest.splits["test_realistic"])
    assert set(new_manifest.splits["train"]) == set(manifest.splits["train"]) | extra
    assert new_manifest.counts["train"]["No-Anomaly"] == manifest.counts["train"]["No-Anomaly"] + 1388
    assert new_manifest.counts["test_realistic"]["No-Anomaly"] == len(new["test_realistic"]) - 74
    check_disjoint(new["train"].ids, new_manifest)
    check_disjoint(new["train"].ids, manifest, ("val", "test"))  # the extra images were unused, not held out
    same = levers.add_no_anomaly(dataset, manifest, dict(arrays), 2.0, seed=1)[1]
    assert np.array_equal(same["train"].ids, new["train"].ids)  # seeded
    assert levers.add_no_anomaly(dataset, manifest, arrays, 1.0, seed=1)[1] is arrays
    with pytest.raises(ConfigError, match="only .* are unused"):
        levers.add_no_anomaly(dataset, manifest, dict(arrays), 8.0, seed=1)


# ------------------------------------------------------------------------------------- pretraining
def _assert_pool_is_clean(dataset, manifest):
    pool = pretrain_pool(dataset, manifest.seed)
    held = set().union(*(manifest.splits[s] for s in HELD_OUT))
    assert pool and not pool & held
    assert pool | held == set(dataset.ids.tolist())  # everything else is used
    assert set(manifest.splits["train"]) <= pool
    return pool


def test_pretraining_pool_never_holds_a_validation_or_test_image(dataset):
    for seed in (0, 1, 2):
        manifest = make_binary_split(dataset, ProtocolConfig(seed=seed))
        pool = _assert_pool_is_clean(dataset, manifest)
        assert len(pool) == 1388 + 347 + 60 + 20 + 30
    with pytest.raises(DataError, match="validation/test image"):
        check_disjoint([manifest.splits["test"][0] + "@rot180"], manifest)


@pytest.mark.needs_data
@pytest.mark.slow
def test_real_manifests_keep_held_out_images_out_of_pretraining_and_training(real_dataset):
    for seed in (0, 1, 2):
        manifest = make_binary_split(real_dataset, ProtocolConfig(seed=seed))
        pool = _assert_pool_is_clean(real_dataset, manifest)
        # 10 other classes (9,505) + 347 training hotspots + 1,388 training No-Anomaly images
        assert len(pool) == 9505 + 347 + 1388
        arrays = dict(materialize(real_dataset, manifest))
        new_manifest, new = levers.add_no_anomaly(real_dataset, manifest, arrays, 2.0, seed)
        check_disjoint(new["train"].ids, manifest, ("val", "test"))
        check_disjoint(new["train"].ids, new_manifest)
        assert len(new["test"]) == 148 and new_manifest.splits["test"] == manifest.splits["test"]


# ------------------------------------------------------------------------------------ configuration
def test_lever_options_are_part_of_a_runs_identity_and_default_to_the_study():
    base = TrainConfig(arch="squeezenet", image_size=32).resolve()
    stored = {k: v for k, v in base.to_dict().items()
              if k not in ("lr_schedule", "warmup_epochs", "online_augment", "no_anomaly_ratio", "task", "leave_out",
                           "init_from_checkpoint")}
    assert identity_differences(stored, base) == []  # a config written before the levers existed
    cosine = TrainConfig(arch="squeezenet", image_size=32, lr_schedule="cosine").resolve()
    assert "lr_schedule: 'constant' -> 'cosine'" in "; ".join(identity_differences(stored, cosine))
    longer = TrainConfig(arch="squeezenet", image_size=32, lr_schedule="cosine", epochs=50).resolve()
    assert any(d.startswith("epochs_schedule") for d in identity_differences(cosine.to_dict(), longer))
    assert identity_differences(base.to_dict(), TrainConfig(arch="squeezenet", image_size=32, epochs=50).resolve()) == []
    for kwargs, message in (({"lr_schedule": "step"}, "--lr-schedule"), ({"online_augment": "cutout"}, "--online-augment"),
                            ({"no_anomaly_ratio": 0.5}, "--no-anomaly-ratio"), ({"warmup_epochs": -1}, "--warmup-epochs"),
                            ({"init_from": "/nonexistent-run"}, "--init-from /nonexistent-run does not exist")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(arch="squeezenet", **kwargs).resolve()


# ------------------------------------------------------------------------------ end to end, tiny CNN
@pytest.mark.slow
def test_best_like_recipe_end_to_end_on_a_tiny_cnn(tmp_path):
    """Pretraining -> fine-tuning with every lever through the grid runner; the held-out images never
    reach pretraining or training, the summary says how the run was initialised, and a rerun skips it."""
    from test_train_tiny import TINY  # registers the test-only tiny CNN

    from hotspot_jax.reproduce.recipes import Recipe
    from hotspot_jax.reproduce.runner import pretrain_dir, result_path, run_dir, run_grid

    data = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 300, "Cell": 30, "Diode": 20}, seed=4)
    recipe = Recipe(name="tiny-best", description="test", image_size=16, epochs=2, batch_size=16, lr=0.01,
                    lr_schedule="cosine", warmup_epochs=1, online_augment="flip-shift", no_anomaly_ratio=1.5,
                    pretrain_epochs=1, pretrain_lr=0.01, label_smoothing=0.1, mixup_alpha=0.2, tta="flips",
                    aspect="source")
    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", dataset=data, progress=False,
              log=lambda m: None)
    rep = run_grid(recipe, [TINY], [0], **kw)
    assert rep["done"] == [f"{TINY}-s0"]
    summary = json.loads(result_path(tmp_path / "results", "tiny-best", TINY, 0).read_text())
    assert summary["initialisation"].startswith("in-domain: classes12 run tiny_cnn_test-s0-classes12-16px-e1")
    pre_counts = summary["pretraining"]["split_counts"]
    assert sum(pre_counts["train"].values()) + sum(pre_counts["val"].values()) == 190
    assert summary["timing"]["pretrain_seconds"] > 0 and summary["pretraining"]["left_out"]
    assert summary["test"]["n"] == 12 and len(summary["test_predictions"]["ids"]) == 12
    assert summary["train_config"]["no_anomaly_ratio"] == 1.5 and summary["train_config"]["init_from_checkpoint"]
    # training saw 28 hotspots x 4 plus 1.5 x 112 No-Anomaly images; nothing held out
    workdir = run_dir(tmp_path / "runs", "tiny-best", TINY, 0)
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["counts"]["train_augmented"] == {"No-Anomaly": 168, "Hotspot": 112}
    train = set(manifest["splits"]["train"])
    for split in ("val", "test", "test_realistic"):
        assert not train & set(manifest["splits"][split])
    assert summary["test_realistic"]["n_neg"] == 300 - 168 - 6
    pre_dir = pretrain_dir(tmp_path / "runs", recipe, TINY, 0)
    pre_manifest = json.loads((pre_dir / "manifest.json").read_text())
    pool = set(pre_manifest["splits"]["train"]) | set(pre_manifest["splits"]["val"])
    assert pool == pretrain_pool(data, 0)
    for split in ("val", "test"):
        assert not pool & set(manifest["splits"][split])
    assert not pool & set(manifest["splits"]["test_realistic"])
    # the learning rate followed the warmup + cosine schedule
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = (112 + 168) // 16
    assert history[0]["lr"] == pytest.approx(0.01 * (steps - 1) / steps, rel=1e-4)
    assert history[1]["lr"] == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * (steps - 1) / steps)), rel=1e-3, abs=1e-7)
    assert run_grid(recipe, [TINY], [0], **kw)["skipped"] == [f"{TINY}-s0"]
    # the regularisation levers reached the run; the operating point and validation metrics were kept
    assert (summary["train_config"]["label_smoothing"], summary["train_config"]["mixup_alpha"],
            summary["train_config"]["tta"], summary["train_config"]["aspect"]) == (0.1, 0.2, "flips", "source")
    from hotspot_jax.train.restore import load_trained

    pre = json.loads((pre_dir / "config.json").read_text())
    assert pre["run"]["aspect"] == "source" and pre["run"]["task"] == "classes12" and str(pre_dir).endswith("-source")
    tm = load_trained(workdir)
    assert tm.input_hw == (27, 16)  # 16 px wide, 5:3
    assert tm.predict_proba(np.zeros((3, 40, 24), np.uint8)).shape == (3,)
    point = summary["operating_point"]
    assert point["chosen_on"] == "validation" and point["validation_n_pos"] + point["validation_n_neg"] == 12
    assert summary["test_realistic_at_operating_point"]["threshold"] == point["threshold"]
    from hotspot_jax.reproduce.lever_table import validation_lever_table

    table = validation_lever_table(tmp_path / "results", ["tiny-best"])
    assert "label smoothing 0.1, mixup 0.2, TTA flips, 5:3 input" in table
    assert f"{point['validation_at_0.5']['accuracy']:.4f}" in table and f"{point['threshold']:.4f}" in table


# ------------------------------------------------------------------- pretraining interrupted
def test_grid_reports_a_run_interrupted_in_pretraining(tmp_path):
    """Ctrl-C in the pretraining run (an ordinary run: it resumes as any run does) stops the grid there."""
    from test_train_tiny import TINY

    from hotspot_jax.reproduce.recipes import Recipe
    from hotspot_jax.reproduce.runner import result_path, run_grid
    from hotspot_jax.train.loop import RunResult

    recipe = Recipe(name="tiny-pre", description="test", image_size=16, epochs=1, batch_size=16, lr=0.01,
                    pretrain_epochs=1, pretrain_lr=0.01)
    calls = []

    def interrupted(cfg, **kw):
        calls.append(cfg)
        return RunResult(workdir=tmp_path, epochs_done=0, best=None, interrupted=True)

    rep = run_grid(recipe, [TINY], [0, 1], runs_dir=tmp_path / "runs", results_dir=tmp_path / "results",
                   dataset=fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 200}, seed=6),
                   progress=False, log=lambda m: None, train_fn=interrupted)
    assert rep == {"done": [], "skipped": [], "interrupted": [f"{TINY}-s0"]}
    assert [(c.task, c.leave_out, c.lr_schedule) for c in calls] == [("classes12", "hotspot", "cosine")]
    assert not result_path(tmp_path / "results", "tiny-pre", TINY, 0).exists()
