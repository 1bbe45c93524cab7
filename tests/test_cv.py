"""Cross-validation inside a seed's hotspot training pool (issue 23, hotspot_jax.data.cv and
hotspot_jax.reproduce.cv): the folds partition the training originals, never touch the seed's validation or
test images, keep an image and its augmentations together, pass the no-leak check from a shared pretraining
and fail it from one that saw the pool; fold runs go through the one training loop; OOF summaries and the
comparison of two recipes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hotspot_jax.cli import run_cli
from hotspot_jax.data import CLASS_NAMES, ProtocolConfig, SplitManifest, make_binary_split, materialize
from hotspot_jax.data.classes import HOTSPOT_CLASSES
from hotspot_jax.data.cv import make_fold_split, parse_cv_fold, training_folds
from hotspot_jax.data.tasks import check_no_leak, get_task, make_split, source_ids
from hotspot_jax.errors import ConfigError, DataError
from test_reproduce_levers import fake_dataset
from test_train_tiny import TINY, fast_compile  # noqa: F401  (TINY registers the tiny CNN; fast_compile: fixture)

SIZES = {"Hot-Spot": 47, "Hot-Spot-Multi": 26, "No-Anomaly": 2000, "Cell": 40}


@pytest.fixture(scope="module")
def dataset():
    return fake_dataset(SIZES, seed=3)


def _seed_split(dataset, seed=0, pools="fixed"):
    return make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools=pools))


def _class_of(dataset, ids):
    return dataset.labels[dataset.indices(list(ids))]


@pytest.mark.parametrize("pools", ["fixed", "study"])
@pytest.mark.parametrize("n_folds", [2, 5])
def test_folds_partition_the_training_originals_stratified(dataset, pools, n_folds):
    seed = _seed_split(dataset, 1, pools)
    folds = training_folds(dataset, seed, n_folds)
    train = set(seed.splits["train"])
    hot = {str(i) for i in dataset.ids_of_class(*HOTSPOT_CLASSES)}
    for kind, want in (("hotspot", train & hot), ("no_anomaly", train - hot)):
        sets = [set(f) for f in folds[kind]]
        assert sum(len(s) for s in sets) == len(want) and set().union(*sets) == want  # disjoint, union = all
    assert max(map(len, folds["hotspot"])) - min(map(len, folds["hotspot"])) <= 1
    # each fold's No-Anomaly share is what its hotspots ask for (x4 augmented, ratio 1)
    assert [len(f) for f in folds["no_anomaly"]] == [4 * len(f) for f in folds["hotspot"]]
    for c in HOTSPOT_CLASSES:  # stratified: per class, fold sizes differ by at most one
        per_fold = [int((_class_of(dataset, f) == CLASS_NAMES.index(c)).sum()) for f in folds["hotspot"]]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    assert training_folds(dataset, seed, n_folds) == folds  # deterministic
    assert training_folds(dataset, _seed_split(dataset, 2, pools), n_folds) != folds  # seeded by the split's seed


@pytest.mark.parametrize("n_folds", [2, 4])
def test_fold_splits_keep_validation_and_test_images_apart(dataset, n_folds):
    seed = _seed_split(dataset, 0)
    held = {name: set(seed.splits[name]) for name in ("val", "test", "test_realistic")}
    hot = {str(i) for i in dataset.ids_of_class(*HOTSPOT_CLASSES)}
    train_hot = set(seed.splits["train"]) & hot
    oof = []
    for k in range(1, n_folds + 1):
        fold = make_fold_split(dataset, seed, f"{k}/{n_folds}")
        assert fold.splits["test"] == seed.splits["val"] and fold.counts["test"] == seed.counts["val"]
        assert "test_realistic" not in fold.splits
        for name in ("train", "val"):
            assert set(fold.splits[name]) <= set(seed.splits["train"])  # never a val/test/realistic image of the seed
            assert not set(fold.splits[name]) & (held["val"] | held["test"] | held["test_realistic"])
        arrays = materialize(dataset, fold)
        # an image and its augmented copies stay together: no source of a validation image is trained on
        assert not source_ids(arrays["train"].ids) & set(fold.splits["val"])
        assert len(arrays["train"]) == sum(fold.counts["train_augmented"].values())
        others = {i for f, ids in enumerate(training_folds(dataset, seed, n_folds)["no_anomaly"]) if f != k - 1 for i in ids}
        assert set(fold.splits["train"]) - hot == others  # training No-Anomaly: exactly the other folds'
        c = fold.counts
        assert c["val"]["Hotspot"] == c["val"]["No-Anomaly"]  # balanced validation
        assert c["train_augmented"]["No-Anomaly"] == c["train_augmented"]["Hotspot"] == 4 * c["train"]["Hotspot"]
        assert fold.cv["fold"] == k and fold.cv["folds"] == n_folds and "fold" in fold.cv["splits"]["val"]
        assert f"cross-validation fold {k} of {n_folds}" in fold.summary()
        assert SplitManifest.from_dict(json.loads(json.dumps(fold.to_dict()))) == fold  # round trip
        assert make_fold_split(dataset, seed, f"{k}/{n_folds}") == fold  # deterministic
        oof += [i for i in fold.splits["val"] if i in hot]
    assert sorted(oof) == sorted(train_hot) and len(set(oof)) == len(oof)  # every training hotspot validated once


def test_no_cv_leaves_manifests_unchanged(dataset, tmp_path):
    """cv_fold None: the run's manifest is the seed's split, with no "cv" key; an old config is the same run."""
    from hotspot_jax.train.config import TrainConfig, identity_differences
    from hotspot_jax.train.loop import load_data

    cfg = TrainConfig(arch=TINY, image_size=16, no_anomaly_pools="fixed", workdir=str(tmp_path / "w")).resolve()
    manifest, _ = load_data(cfg, lambda m: None, dataset, progress=False)
    assert manifest.to_dict() == _seed_split(dataset, 0).to_dict() and "cv" not in manifest.to_dict()
    stored = {k: v for k, v in cfg.to_dict().items() if k != "cv_fold"}  # a config written before the option
    assert identity_differences(stored, cfg) == []
    fold = dataclasses.replace(cfg, cv_fold="1/3").resolve()
    assert identity_differences(cfg.to_dict(), fold) == ["cv_fold: None -> '1/3'"]
    manifest, arrays = load_data(fold, lambda m: None, dataset, progress=False)
    assert manifest.cv["fold"] == 1 and set(arrays) == {"train", "val", "test"}
    default = dataclasses.replace(cfg, workdir=None, cv_fold="2/5").resolve().workdir
    assert default.endswith("-16px-cv2of5")


def test_no_leak_from_a_shared_pretraining_but_not_from_the_pool(dataset):
    shared = make_split(get_task("classes12"), dataset, seed=0, leave_out="hotspot-any-seed", pools="fixed")
    for seed in (0, 3):
        base = _seed_split(dataset, seed)
        for k in (1, 2, 3):
            check_no_leak([("shared", shared)], make_fold_split(dataset, base, f"{k}/3"))  # raises on a leak
    fold = make_fold_split(dataset, _seed_split(dataset, 0), "2/3")
    val_image = fold.splits["val"][0]
    leaky = dataclasses.replace(shared, splits={**shared.splits, "train": shared.splits["train"] + (f"{val_image}@rot180",)})
    with pytest.raises(DataError, match="--init-from"):
        check_no_leak([("leaky", leaky)], fold)
    per_seed = make_split(get_task("classes12"), dataset, seed=0, leave_out="hotspot", pools="fixed")
    with pytest.raises(DataError, match="--init-from per seed: .* fold validates on the seed's training pool"):
        check_no_leak([("per seed", per_seed)], fold)  # a per-seed pretraining trained on the pool


def test_bad_fold_values(dataset):
    assert parse_cv_fold("2/5") == (2, 5) and parse_cv_fold(" 5 / 5 ") == (5, 5)
    for text, message in (("0/5", "1 to 5"), ("6/5", "1 to 5"), ("x", "expects k/K"), ("1/1", "at least 2"),
                          ("2/", "expects k/K"), ("-1/5", "expects k/K")):
        with pytest.raises(ConfigError, match=message):
            parse_cv_fold(text)
    seed = _seed_split(dataset, 0)
    n_hot = seed.counts["train"]["Hotspot"]
    make_fold_split(dataset, seed, f"1/{n_hot}")  # one hotspot per fold still works
    with pytest.raises(ConfigError, match=f"use K <= {n_hot}"):
        make_fold_split(dataset, seed, f"1/{n_hot + 1}")
    multi = make_split(get_task("classes12"), dataset, seed=0)
    with pytest.raises(ConfigError, match="hotspot task"):
        make_fold_split(dataset, multi, "1/2")


def test_train_cli_refuses_bad_folds_in_one_line_and_writes_nothing(capsys, tmp_path, fast_compile, monkeypatch):
    from hotspot_jax.train.cli import build_parser, main

    help_text = " ".join(build_parser().format_help().split())
    assert "--cv-fold k/K" in help_text and "never the test sets" in help_text
    base = ["--arch", TINY, "--image-size", "16", "--no-progress"]
    for extra, needle in ((["--cv-fold", "0/5"], "1 to 5"), (["--cv-fold", "5/4"], "1 to 4"),
                          (["--cv-fold", "x"], "expects k/K"), (["--cv-fold", "1/1"], "at least 2"),
                          (["--cv-fold", "1/3", "--task", "classes12"], "does not apply to --task classes12"),
                          (["--cv-fold", "1/3", "--no-anomaly-ratio", "2"], "realistic test set")):
        workdir = tmp_path / "w"
        assert run_cli(main, [*base, *extra, "--workdir", str(workdir)]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err
        assert not workdir.exists()


def test_train_cli_refuses_more_folds_than_training_hotspots(capsys, tmp_path, monkeypatch, fast_compile):
    """A K that leaves a fold without a hotspot is found with the data: one error line, the new workdir removed."""
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    import hotspot_jax.data as data_pkg
    from hotspot_jax.train.cli import main

    small = fake_dataset({"Hot-Spot": 6, "Hot-Spot-Multi": 4, "No-Anomaly": 300}, seed=5)
    monkeypatch.setattr(data_pkg, "load_dataset", lambda *a, **k: small)
    workdir = tmp_path / "runs" / "w"
    code = run_cli(main, ["--arch", TINY, "--image-size", "16", "--no-progress", "--cv-fold", "1/9",
                          "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == 2 and "leave a fold without a hotspot" in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------- reproduce --cv
def _recipe(**kw):
    from hotspot_jax.reproduce.recipes import Recipe

    return Recipe(name=kw.pop("name", "tiny-cv"), description="test", image_size=16, epochs=1, batch_size=16, lr=0.01,
                  lr_schedule="cosine", online_augment="flip", pretrain_epochs=1, no_anomaly_pools="fixed",
                  pretrain_pool="shared", tta="flips", **kw)


def test_cv_refuses_recipes_that_are_not_leak_free(tmp_path, capsys):
    from hotspot_jax.reproduce.cli import main as reproduce_main
    from hotspot_jax.reproduce.cv import check_cv_recipe
    from hotspot_jax.reproduce.recipes import RECIPES, Recipe

    check_cv_recipe(RECIPES["best-v2"], 5)  # shared pretraining: fine
    check_cv_recipe(RECIPES["paper-cpu"], 5)  # no pretraining at all: fine
    for recipe, folds, needle in ((RECIPES["best"], 5, "pretrain_pool=seed"), (RECIPES["best-v2"], 1, "at least 2"),
                                  (RECIPES["classes12"], 3, "classes12 task"),
                                  (Recipe(name="r", description="", no_anomaly_ratio=2.0), 3, "realistic test set")):
        with pytest.raises(ConfigError, match=needle):
            check_cv_recipe(recipe, folds)
    code = run_cli(reproduce_main, ["--recipe", "best", "--cv", "5", "--runs-dir", str(tmp_path / "runs"),
                                    "--results-dir", str(tmp_path / "results"), "--seeds", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "pretrain_pool=seed" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_cv_grid_end_to_end_on_a_tiny_cnn(tmp_path, fast_compile, capsys, monkeypatch):
    """Shared pretraining once, K fold runs through the one training loop, OOF summaries over every training
    hotspot, the cv summary, a resumed grid skips everything, and two recipes compare on their OOF metrics."""
    from hotspot_jax.reproduce.cv import cv_compare, fold_run_dir, load_oof, oof_path, run_cv_grid
    from hotspot_jax.reproduce.runner import pretrain_dir
    from hotspot_jax.train.loop import RunResult, train

    data = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 14, "No-Anomaly": 900, "Cell": 40, "Diode": 30}, seed=7)
    calls = []

    def counting_train(cfg, **kw):
        calls.append((cfg.task or "hotspot", cfg.cv_fold, cfg.seed))
        return train(cfg, **kw)

    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", dataset=data, progress=False,
              log=lambda m: None, train_fn=counting_train)
    recipe = _recipe()

    def interrupted_in_fold_2(cfg, **kw):  # Ctrl-C during seed 0's second fold
        if cfg.cv_fold == "2/2":
            calls.append(("interrupted", cfg.cv_fold, cfg.seed))
            return RunResult(workdir=tmp_path, epochs_done=0, best=None, interrupted=True)
        return counting_train(cfg, **kw)

    first = run_cv_grid(recipe, [TINY], [0, 1], 2, **{**kw, "train_fn": interrupted_in_fold_2})
    assert first["done"] == [f"{TINY}-s0-f1"] and first["interrupted"] == [f"{TINY}-s0-f2"] and first["summary"] is None
    rep = run_cv_grid(recipe, [TINY], [0, 1], 2, **kw)  # the same command again goes on
    assert rep["skipped"] == [f"{TINY}-s0-f1"] and not rep["interrupted"]
    assert rep["done"] == [f"{TINY}-s0-f2", f"{TINY}-s1-f1", f"{TINY}-s1-f2"]
    # the shared pretraining was trained once and reused by every fold and seed
    assert calls == [("classes12", None, 0), ("hotspot", "1/2", 0), ("interrupted", "2/2", 0)] + [
        ("hotspot", f"{k}/2", s) for s, k in ((0, 2), (1, 1), (1, 2))]
    pre = pretrain_dir(tmp_path / "runs", recipe, TINY, 0)
    for s in (0, 1):
        seed_split = make_binary_split(data, ProtocolConfig(seed=s, no_anomaly_pools="fixed"))
        val_ids = []
        for k in (1, 2):
            workdir = fold_run_dir(tmp_path / "runs", "tiny-cv", TINY, s, k, 2)
            config = json.loads((workdir / "config.json").read_text())
            assert config["run"]["cv_fold"] == f"{k}/2" and config["run"]["tta"] == "flips"
            assert config["run"]["init_from"] == str(pre.resolve())
            manifest = json.loads((workdir / "manifest.json").read_text())
            assert manifest["splits"]["test"] == list(seed_split.splits["val"])
            assert not (workdir / "evaluation" / "test_realistic_metrics.json").exists()
            summary = json.loads((tmp_path / "results" / "tiny-cv" / "cv2" / f"{TINY}-s{s}-f{k}.json").read_text())
            assert "test_realistic" not in summary and summary["test"]["n"] == len(seed_split.splits["val"])
            val_ids += summary["val_predictions"]["ids"]
        oof = json.loads(oof_path(tmp_path / "results", "tiny-cv", TINY, s, 2).read_text())
        train_hot = len(set(seed_split.splits["train"]) & {str(x) for x in data.ids_of_class(*HOTSPOT_CLASSES)})
        assert oof["oof"]["n_pos"] == oof["oof"]["n_neg"] == train_hot  # every training hotspot once, balanced
        assert sorted(oof["oof_predictions"]["ids"]) == sorted(val_ids) and oof["oof"]["n"] == len(set(val_ids))
        assert oof["oof"]["roc_auc"] is not None and oof["oof"]["log_loss"] > 0
        assert 0 <= oof["oof"]["specificity_at_sensitivity_0.95"] <= 1 and oof["val_split_fold_mean"]["accuracy"] is not None
        # the last-epoch OOF: the same images, each fold's final checkpoint (chosen by nothing), the run's epochs
        assert oof["oof_last_epoch"]["n"] == oof["oof"]["n"] and oof["oof_last_epoch"]["epochs"] == [recipe.epochs] * 2
    assert rep["summary"]["overall"]["n_runs"] == 2
    # scripts/evaluate.py on a fold run: by default its 'test' (the seed's validation split), no realistic test set
    import hotspot_jax.data as data_pkg
    from hotspot_jax.evaluate.cli import main as evaluate_main

    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    monkeypatch.setattr(data_pkg, "load_dataset", lambda *a, **k: data)
    fold_dir = fold_run_dir(tmp_path / "runs", "tiny-cv", TINY, 0, 1, 2)
    assert run_cli(evaluate_main, ["--workdir", str(fold_dir), "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    assert "cross-validation fold 1 of 2" in capsys.readouterr().err
    assert (tmp_path / "ev" / "test_metrics.json").is_file() and not (tmp_path / "ev" / "test_realistic_metrics.json").exists()
    assert (tmp_path / "results" / "tiny-cv" / "cv2" / "cv_summary.md").read_text().count("|") > 10
    # a fold summary written before the last-epoch predictions were recorded: added from its run, nothing retrained
    f1 = tmp_path / "results" / "tiny-cv" / "cv2" / f"{TINY}-s0-f1.json"
    recorded = json.loads(f1.read_text())
    f1.write_text(json.dumps({k: v for k, v in recorded.items() if k != "val_predictions_last"}))
    again = run_cv_grid(recipe, [TINY], [0, 1], 2, **kw)
    assert len(again["skipped"]) == 4 and not again["done"] and len(calls) == 6  # nothing retrained
    assert json.loads(f1.read_text())["val_predictions_last"] == recorded["val_predictions_last"]
    # a second "recipe": the same OOF files with one metric moved, compared pair by pair
    other = tmp_path / "results" / "tiny-cv+x" / "cv2"
    other.mkdir(parents=True)
    for r in load_oof(tmp_path / "results", "tiny-cv", 2):
        r = dict(r, oof={**r["oof"], "roc_auc": r["oof"]["roc_auc"] - 0.01, "log_loss": r["oof"]["log_loss"] - 0.1})
        (other / f"{r['arch']}-s{r['seed']}-oof.json").write_text(json.dumps(r))
    table = cv_compare(tmp_path / "results", "tiny-cv", "tiny-cv+x")
    assert "over 2 (network, seed) pairs" in table
    assert "| OOF ROC AUC |" in table and "| -0.0100 | 0 of 2 |" in table
    assert "| -0.1000 | 2 of 2 |" in table  # lower log loss is better
    from hotspot_jax.reproduce.cli import main as reproduce_main

    assert run_cli(reproduce_main, ["--results-dir", str(tmp_path / "results"), "--cv-compare", "tiny-cv", "tiny-cv+x"]) == 0
    assert capsys.readouterr().out.strip() == table
    assert run_cli(reproduce_main, ["--results-dir", str(tmp_path / "results"), "--cv-compare", "tiny-cv", "none"]) == 2
    assert "no cross-validation results shared" in capsys.readouterr().err


def test_oof_summary_scores_the_concatenated_folds():
    from hotspot_jax.evaluate import decision_threshold
    from hotspot_jax.evaluate.metrics import binary_metrics, log_loss
    from hotspot_jax.reproduce.cv import oof_summary

    rng = np.random.default_rng(0)
    folds, all_labels, all_probs = [], [], []
    for k in (1, 2, 3):
        labels = [1] * 5 + [0] * 5
        probs = list(np.round(np.clip(np.array(labels) * 0.4 + rng.random(10) * 0.6, 0, 1), 6))
        ids = [f"{k}-{i}" for i in range(10)]
        folds.append({"arch": "a", "seed": 0, "recipe": {"name": "r"}, "cv_fold": {"fold": k, "folds": 3},
                      "val_predictions": {"ids": ids, "labels": labels, "probs": probs},
                      "test": {"accuracy": 0.5 + 0.1 * k, "roc_auc": 0.9, "loss": 0.3, "sensitivity": 1.0,
                               "specificity": 0.5}, "timing": {"train_seconds": 10}})
        all_labels += labels
        all_probs += probs
    out = oof_summary(folds[::-1])  # any order
    m = binary_metrics(all_labels, all_probs)
    assert out["oof"]["n"] == 30 and out["oof"]["roc_auc"] == pytest.approx(m["roc_auc"])
    assert out["oof"]["accuracy"] == pytest.approx(m["accuracy"])
    assert out["oof"]["log_loss"] == pytest.approx(log_loss(all_labels, all_probs))
    point = decision_threshold.choose(all_labels, all_probs, 0.95)
    assert out["oof"]["specificity_at_sensitivity_0.95"] == point["validation_specificity"]
    assert out["val_split_fold_mean"]["accuracy"] == pytest.approx(0.7) and out["train_seconds"] == 30
    with pytest.raises(DataError, match="not folds 1 to 3"):
        oof_summary(folds[:2])
    dup = [dict(f, val_predictions={**f["val_predictions"], "ids": [f"x{i}" for i in range(10)]}) for f in folds]
    with pytest.raises(DataError, match="validation of two folds"):
        oof_summary(dup)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-np.log(1 - 1e-6))  # clipped, finite
    assert out["oof_last_epoch"] is None  # fold summaries without last-epoch predictions
    mixed = [dict(f, train_config={"init_from_checkpoint": f"pre/best/{k}", "image_size": 48, "tta": "none"})
             for k, f in enumerate(folds)]  # a pretraining rerun between folds
    with pytest.raises(DataError, match="differ in starting checkpoint"):
        oof_summary(mixed)
    last = [dict(f, val_predictions_last={**f["val_predictions"], "probs": [1 - p for p in f["val_predictions"]["probs"]],
                                          "epoch": 7}) for f in folds]
    flipped = oof_summary(last)["oof_last_epoch"]
    assert flipped["roc_auc"] == pytest.approx(1 - m["roc_auc"]) and flipped["epochs"] == [7, 7, 7]
    with pytest.raises(DataError, match="not of the same images"):
        oof_summary([dict(f, val_predictions_last={**f["val_predictions_last"], "ids": [f"y{k}-{i}" for i in range(10)]})
                     for k, f in enumerate(last)])


def test_cv_compare_refuses_pairs_of_different_images(tmp_path):
    """Two recipes are compared pair by pair only on OOF predictions of the very same images."""
    from hotspot_jax.reproduce.cv import CV_FORMAT, cv_compare

    def write(folder, ids, auc):
        d = tmp_path / folder / "cv5"
        d.mkdir(parents=True, exist_ok=True)
        oof = {"roc_auc": auc, "accuracy": 0.9, "log_loss": 0.2, "specificity_at_sensitivity_0.95": 0.8}
        (d / "a-s0-oof.json").write_text(json.dumps({"format": CV_FORMAT, "arch": "a", "seed": 0, "oof": oof,
                                                     "val_split_fold_mean": {}, "oof_predictions": {"ids": ids}}))

    write("A", ["1", "2"], 0.9)
    write("B", ["2", "1"], 0.95)
    assert "| +0.0500 | 1 of 1 |" in cv_compare(tmp_path, "A", "B")
    write("C", ["1", "3"], 0.95)
    with pytest.raises(DataError, match="different images"):
        cv_compare(tmp_path, "A", "C")
