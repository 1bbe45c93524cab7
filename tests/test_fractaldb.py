"""Formula-driven pretraining (hotspot_jax.data.fractaldb and the recipe keys ``formula_*``): the fractal images
are a function of the seed, shaped like the dataset's, written atomically; the recipe trains them as an ordinary
own-task run that starts the in-domain pretraining, and no InfraredSolarModules image enters that run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from hotspot_jax.data import fractaldb
from hotspot_jax.errors import ConfigError


def read_folder(path):
    return {p.relative_to(path).as_posix(): np.asarray(Image.open(p)) for p in sorted(path.rglob("*.png"))}


def test_fractal_images_are_a_function_of_the_seed_and_shaped_like_the_dataset(tmp_path):
    a = fractaldb.write_fractaldb(tmp_path / "a", 3, 5, seed=1)
    b = fractaldb.write_fractaldb(tmp_path / "b", 3, 5, seed=1)
    c = fractaldb.write_fractaldb(tmp_path / "c", 3, 5, seed=2)
    ia, ib, ic = read_folder(a), read_folder(b), read_folder(c)
    assert sorted({k.split("/")[0] for k in ia}) == ["fractal0", "fractal1", "fractal2"] and len(ia) == 15
    assert ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)
    assert any(not np.array_equal(ia[k], ic[k]) for k in ia)
    for image in ia.values():
        assert image.shape == (40, 24) and image.dtype == np.uint8 and image.max() == 255
    # the images of a class differ (a parameter is perturbed and the chaos game redrawn)
    assert not np.array_equal(ia["fractal0/0000.png"], ia["fractal0/0001.png"])
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_a_finished_folder_is_kept_and_other_settings_are_refused(tmp_path):
    out = fractaldb.write_fractaldb(tmp_path / "f", 2, 4, seed=0)
    stamp = (out / "fractal0" / "0000.png").stat().st_mtime_ns
    assert fractaldb.write_fractaldb(out, 2, 4, seed=0) == out
    assert (out / "fractal0" / "0000.png").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other settings"):
        fractaldb.write_fractaldb(out, 3, 4, seed=0)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        fractaldb.write_fractaldb(tmp_path / "g", 1, 4)


def test_diverging_and_degenerate_systems_fail_the_filling_rule():
    rng = np.random.default_rng(0)
    diverging = np.array([[3.0, 0, 0, 3.0, 0.5, 0.5], [-3.0, 0, 0, 3.0, 0, 0]])
    assert fractaldb.render(diverging, rng) is None and fractaldb.filling_rate(diverging, rng) == 0.0
    to_a_point = np.array([[0.0, 0, 0, 0, 0.3, 0.3], [0.0, 0, 0, 0, 0.3, 0.3]])
    assert fractaldb.filling_rate(to_a_point, rng) == 0.0
    sierpinski = np.array([[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0.25, 0.5]])
    assert 0.2 < fractaldb.filling_rate(sierpinski, rng) < 0.6
    # the search keeps exactly the systems that pass the rule, in order (replayed with the same stream)
    found = fractaldb.search_classes(8, np.random.default_rng(3))
    replay, kept, rejected = np.random.default_rng(3), [], 0
    while len(kept) < 8:
        ifs = fractaldb.sample_ifs(replay)
        if fractaldb.filling_rate(ifs, replay) >= fractaldb.MIN_FILL:
            kept.append(ifs)
        else:
            rejected += 1
    assert rejected > 0 and len(found) == 8 and all(np.array_equal(a, b) for a, b in zip(found, kept))
    assert all(fractaldb.MAPS[0] <= len(ifs) <= fractaldb.MAPS[1] for ifs in found)


def test_an_existing_folder_is_never_overwritten_and_a_failed_write_leaves_nothing(tmp_path):
    mine = tmp_path / "mine"
    (mine / "a").mkdir(parents=True)
    (mine / "a" / "1.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder of formula images"):
        fractaldb.write_fractaldb(mine, 2, 4)
    assert (mine / "a" / "1.png").read_bytes() == b"x"

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fractaldb.write_fractaldb(tmp_path / "f", 3, 4, progress=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_formula_keys_leave_committed_recipes_alone_and_name_their_own_pretraining(tmp_path):
    from hotspot_jax.reproduce.recipes import BEST, get_recipe, with_overrides
    from hotspot_jax.reproduce.runner import formula_dir, formula_images_dir, pretrain_dir

    base = get_recipe("best-v2")
    lever = with_overrides(base, ["formula_epochs=20"])
    assert lever.name == "best-v2+formula_epochs=20" and lever.fingerprint() != base.fingerprint()
    assert with_overrides(base, ["formula_epochs=0"]).fingerprint() == base.fingerprint()
    assert BEST.fingerprint() == with_overrides(BEST, ["formula_classes=100"]).fingerprint()
    pre = pretrain_dir(tmp_path, lever, "shufflenet", 0)
    assert pre != pretrain_dir(tmp_path, base, "shufflenet", 0) and "-from-fractaldb-c100-n100-" in pre.name
    source = formula_dir(tmp_path, lever, "shufflenet")
    assert source.name == "shufflenet-fractaldb-c100-n100-64px-e20-lr0.01-flip-shift"
    assert lever.pretrain_config("shufflenet", 0, str(pre), init_from=str(source)).init_from == str(source)
    assert base.pretrain_config("shufflenet", 0, str(pre)).init_from is None
    f = lever.formula_config("shufflenet", "w", str(formula_images_dir(tmp_path, lever)))
    assert (f.task, f.epochs, f.lr, f.lr_schedule, f.image_size, f.seed, f.leave_out) == \
        ("own", 20, lever.pretrain_lr, "cosine", 64, 0, None)
    with pytest.raises(ConfigError, match="formula_classes >= 2"):
        with_overrides(base, ["formula_classes=1"])


def test_formula_then_in_domain_pretraining_then_the_run_on_a_tiny_cnn(tmp_path):
    """The chain fractal run -> classes12 pretraining -> hotspot run through the grid runner: each starts from
    the one before, the fractal run saw no dataset image, the summary records both pretrainings, and a rerun
    skips everything."""
    from test_reproduce_levers import fake_dataset
    from test_train_tiny import TINY

    from hotspot_jax.reproduce.recipes import Recipe
    from hotspot_jax.reproduce.runner import formula_dir, pretrain_dir, result_path, run_grid

    data = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 200, "Cell": 30}, seed=5)
    recipe = Recipe(name="tiny-formula", description="test", image_size=16, epochs=1, batch_size=16, lr=0.01,
                    pretrain_epochs=1, pretrain_lr=0.01, formula_epochs=1, formula_classes=3, formula_per_class=8)
    calls = []
    from hotspot_jax.train.loop import train

    def recording(cfg, **kw):
        calls.append((cfg.task or "hotspot", cfg.data, cfg.init_from))
        return train(cfg, **kw)

    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", dataset=data, progress=False,
              log=lambda m: None)
    assert run_grid(recipe, [TINY], [0], train_fn=recording, **kw)["done"] == [f"{TINY}-s0"]
    fdir, pdir = formula_dir(tmp_path / "runs", recipe, TINY), pretrain_dir(tmp_path / "runs", recipe, TINY, 0)
    assert [c[0] for c in calls] == ["own", "classes12", "hotspot"]
    assert calls[0][1] == str(tmp_path / "runs" / "formula" / "fractaldb-c3-n8-s0") and calls[0][2] is None
    assert calls[1][2] == str(fdir) and calls[2][2] == str(pdir)
    formula_manifest = json.loads((fdir / "manifest.json").read_text())
    used = set(formula_manifest["splits"]["train"]) | set(formula_manifest["splits"]["val"])
    assert len(used) == 3 * 8 - len(formula_manifest["splits"]["test"]) and all(i.startswith("fractal") for i in used)
    # the no-leak check walks the whole chain: the hotspot run's source, and the formula run behind it; an image
    # the in-domain pretraining trained on is still refused as a validation image of a target
    from hotspot_jax.data import SplitManifest
    from hotspot_jax.data.tasks import check_no_leak
    from hotspot_jax.errors import DataError
    from hotspot_jax.train.loop import init_from_chain
    from hotspot_jax.reproduce.runner import run_dir

    run_config = json.loads((run_dir(tmp_path / "runs", "tiny-formula", TINY, 0) / "config.json").read_text())
    chain = init_from_chain(run_config["run"]["init_from_checkpoint"])
    assert [where for where, _ in chain] == [str(pdir), str(fdir)]
    target = SplitManifest.from_json(run_dir(tmp_path / "runs", "tiny-formula", TINY, 0) / "manifest.json")
    check_no_leak(chain, target)
    seen = json.loads((pdir / "manifest.json").read_text())["splits"]["train"][0]
    leaky = dataclasses.replace(target, splits={**target.splits, "val": (*target.splits["val"], seen)})
    with pytest.raises(DataError, match="trained or selected"):
        check_no_leak(chain, leaky)
    pre_config = json.loads((pdir / "config.json").read_text())
    assert str(fdir) in pre_config["run"]["init_from_checkpoint"]
    summary = json.loads(result_path(tmp_path / "results", "tiny-formula", TINY, 0).read_text())
    assert summary["formula_pretraining"]["settings"]["task"] == "own"
    assert summary["timing"]["formula_seconds"] > 0 and summary["pretraining"]["settings"]["task"] == "classes12"
    assert summary["timing"]["pretrain_seconds"] == pytest.approx(
        summary["timing"]["formula_seconds"] + summary["pretraining"]["train_seconds"])
    calls.clear()
    assert run_grid(recipe, [TINY], [0], train_fn=recording, **kw)["skipped"] == [f"{TINY}-s0"]
    assert calls == []
    # another batch size (not in the folder names): the finished formula run is set aside and trained again
    from hotspot_jax.train.loop import RunResult

    def interrupted(cfg, **kw):
        calls.append((cfg.task, cfg.batch_size))
        return RunResult(workdir=tmp_path, epochs_done=0, best=None, interrupted=True)

    other = dataclasses.replace(recipe, batch_size=8)
    assert run_grid(other, [TINY], [0], train_fn=interrupted, **kw)["interrupted"] == [f"{TINY}-s0"]
    assert calls == [("own", 8)] and len(list(fdir.parent.glob(fdir.name + ".stale-*"))) == 1


def test_formula_pretraining_alone_starts_a_classes12_run(tmp_path):
    """Without in-domain pretraining the formula run starts the run itself, whatever its task (it holds no
    dataset image, so even a classes12 target passes the no-leak check); it is counted as a shared pretraining."""
    from test_reproduce_levers import fake_dataset
    from test_train_tiny import TINY

    from hotspot_jax.reproduce.recipes import Recipe
    from hotspot_jax.reproduce.runner import formula_dir, result_path, run_grid

    data = fake_dataset({"Hot-Spot": 40, "Hot-Spot-Multi": 40, "No-Anomaly": 120, "Cell": 40, "Diode": 40}, seed=7)
    recipe = Recipe(name="tiny-formula-c12", description="test", image_size=16, epochs=1, batch_size=16, lr=0.01,
                    task="classes12", formula_epochs=1, formula_classes=2, formula_per_class=12)
    rep = run_grid(recipe, [TINY], [0], runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", dataset=data,
                   progress=False, log=lambda m: None)
    assert rep["done"] == [f"{TINY}-s0"]
    summary = json.loads(result_path(tmp_path / "results", "tiny-formula-c12", TINY, 0).read_text())
    assert str(formula_dir(tmp_path / "runs", recipe, TINY)) in summary["train_config"]["init_from_checkpoint"]
    assert summary["initialisation"].startswith("own images: own run") and "pretraining" not in summary
    timing = summary["timing"]
    assert timing["pretrain_seconds"] == timing["formula_seconds"] > 0 and timing["pretrain_shared_across_seeds"]


def test_lever_tables_name_the_formula_pretraining():
    from hotspot_jax.reproduce.lever_table import _settings
    from hotspot_jax.reproduce.recipes import get_recipe, with_overrides

    def summary(recipe):
        return {"recipe": recipe.to_dict(), "train_config": {"image_size": recipe.image_size}}

    c12 = get_recipe("classes12")
    assert _settings(summary(c12)).endswith("flip-shift, scratch")
    assert _settings(summary(with_overrides(c12, ["formula_epochs=40"]))).endswith("flip-shift, fractals 100 x 100 40 ep")
    both = with_overrides(get_recipe("best-v2"), ["formula_epochs=40"])
    assert f"fractals 100 x 100 40 ep, pretrain {both.pretrain_epochs} ep" in _settings(summary(both))
