"""The fixed No-Anomaly pools (issue 23): a seed-independent realistic test set and a pretraining pool that
no seed's hotspot split validates or tests on, so one in-domain pretraining per network starts every seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hotspot_jax.data import CLASS_NAMES, ProtocolConfig, make_binary_split
from hotspot_jax.data.classes import HOTSPOT_CLASSES
from hotspot_jax.data.protocol import FIXED_POOL_SHARES, no_anomaly_pools
from hotspot_jax.data.tasks import check_no_leak, get_task, held_out_ids, make_split
from hotspot_jax.errors import ConfigError, DataError
from test_reproduce_levers import fake_dataset
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

SIZES = {"Hot-Spot": 40, "Hot-Spot-Multi": 40, "No-Anomaly": 2000, "Cell": 300, "Soiling": 60}


@pytest.fixture(scope="module")
def dataset():
    return fake_dataset(SIZES, seed=1)


def _healthy(dataset, ids) -> set[str]:
    na = {str(i) for i in dataset.ids_of_class("No-Anomaly")}
    return {i for i in ids if i in na}


def test_fixed_pools_partition_no_anomaly_the_same_for_every_call(dataset):
    pools = no_anomaly_pools(dataset, "fixed")
    sets = {k: set(v) for k, v in pools.items()}
    assert sum(len(v) for v in sets.values()) == 2000 == len(set().union(*sets.values()))  # disjoint, complete
    assert (len(sets["realistic"]), len(sets["pretrain"])) == (
        int(FIXED_POOL_SHARES["realistic"] * 2000), int(FIXED_POOL_SHARES["pretrain"] * 2000))
    assert no_anomaly_pools(dataset, "fixed") == pools
    assert list(no_anomaly_pools(dataset, "study")) == ["draw"]
    assert ProtocolConfig().to_dict() == {k: v for k, v in ProtocolConfig(no_anomaly_pools="study").to_dict().items()}
    assert "no_anomaly_pools" not in ProtocolConfig().to_dict()  # manifests made before the option are unchanged
    with pytest.raises(ConfigError, match="pool layout 'mine'"):
        ProtocolConfig(no_anomaly_pools="mine")


def test_fixed_split_draws_from_the_draw_pool_and_shares_one_realistic_set(dataset):
    pools = {k: set(v) for k, v in no_anomaly_pools(dataset, "fixed").items()}
    realistic = []
    for seed in range(4):
        study = make_binary_split(dataset, ProtocolConfig(seed=seed))
        m = make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools="fixed"))
        for name in ("train", "val", "test"):  # the same hotspots as the study's split; healthy ones from the draw pool
            assert set(m.splits[name]) - _healthy(dataset, m.splits[name]) == \
                set(study.splits[name]) - _healthy(dataset, study.splits[name])
            assert _healthy(dataset, m.splits[name]) <= pools["draw"]
        assert m.counts["test"] == study.counts["test"] and m.counts["train_augmented"] == study.counts["train_augmented"]
        real = _healthy(dataset, m.splits["test_realistic"])
        assert real == pools["realistic"] | _healthy(dataset, m.splits["test"])
        realistic.append(real - _healthy(dataset, m.splits["test"]))
        assert not set(m.splits["test_realistic"]) & pools["pretrain"]
        back = type(m).from_dict(json.loads(json.dumps(m.to_dict())))
        assert back.config.no_anomaly_pools == "fixed"
    assert all(r == realistic[0] for r in realistic)  # the same healthy modules for every seed


def test_leave_out_any_seed_keeps_out_every_seeds_held_out_images(dataset):
    m = make_split(get_task("classes12"), dataset, seed=0, leave_out="hotspot-any-seed", pools="fixed")
    used = set(m.splits["train"]) | set(m.splits["val"])
    assert not m.splits["test"] and m.counts["train"]["Hot-Spot"] == m.counts["val"]["Hot-Spot-Multi"] == 0
    assert _healthy(dataset, used) == set(no_anomaly_pools(dataset, "fixed")["pretrain"])
    assert {str(i) for i in dataset.ids_of_class("Cell")} <= used
    for seed in range(6):
        target = make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools="fixed"))
        check_no_leak([("shared", m)], target)  # raises on a leak
        assert not used & held_out_ids(dataset, seed, "fixed")
    # a per-seed leave-out run of seed 1 trained on hotspots that seed 0 tests on: refused
    per_seed = make_split(get_task("classes12"), dataset, seed=1, leave_out="hotspot", pools="fixed")
    assert not (set(per_seed.splits["train"]) | set(per_seed.splits["val"])) & held_out_ids(dataset, 1, "fixed")
    with pytest.raises(DataError, match="--init-from"):
        check_no_leak([("seed 1", per_seed)], make_binary_split(dataset, ProtocolConfig(seed=0, no_anomaly_pools="fixed")))


def test_pool_errors(dataset):
    with pytest.raises(ConfigError, match="hotspot-any-seed needs the fixed"):
        make_split(get_task("classes12"), dataset, seed=0, leave_out="hotspot-any-seed")
    with pytest.raises(ConfigError, match="belongs to the hotspot split"):
        make_split(get_task("classes12"), dataset, seed=0, pools="fixed")
    from test_train_tiny import TINY

    from hotspot_jax.train.config import TrainConfig

    for kwargs, message in (
        (dict(task="classes12", leave_out="hotspot-any-seed"), "needs --no-anomaly-pools fixed"),
        (dict(task="classes12", no_anomaly_pools="fixed"), "applies to the hotspot task or to a run"),
        (dict(no_anomaly_pools="fixed", no_anomaly_ratio=2.0), "not available with --no-anomaly-pools fixed"),
        (dict(no_anomaly_pools="halves"), "unknown --no-anomaly-pools 'halves'"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(arch=TINY, **kwargs).resolve()


def test_shared_pretraining_recipe_is_one_run_for_every_seed(tmp_path):
    from hotspot_jax.reproduce.recipes import RECIPES, with_overrides
    from hotspot_jax.reproduce.runner import pretrain_dir

    best = RECIPES["best"]
    shared = with_overrides(best, ["no_anomaly_pools=fixed", "pretrain_pool=shared"])
    assert pretrain_dir(tmp_path, shared, "squeezenet1_1", 0) == pretrain_dir(tmp_path, shared, "squeezenet1_1", 3)
    assert pretrain_dir(tmp_path, best, "squeezenet1_1", 0) != pretrain_dir(tmp_path, best, "squeezenet1_1", 3)
    fixed = with_overrides(best, ["no_anomaly_pools=fixed"])
    assert pretrain_dir(tmp_path, fixed, "squeezenet1_1", 0) != pretrain_dir(tmp_path, best, "squeezenet1_1", 0)
    cfg = shared.pretrain_config("squeezenet1_1", 3, str(tmp_path / "p"))
    assert (cfg.seed, cfg.leave_out, cfg.no_anomaly_pools) == (0, "hotspot-any-seed", "fixed")
    assert shared.train_config("squeezenet1_1", 3, str(tmp_path / "r")).no_anomaly_pools == "fixed"
    assert best.fingerprint() == RECIPES["best"].fingerprint() and shared.fingerprint() != best.fingerprint()
    with pytest.raises(ConfigError, match="pretrain_pool=shared needs no_anomaly_pools=fixed"):
        with_overrides(best, ["pretrain_pool=shared"])


def test_shared_pretraining_then_hotspot_runs_of_two_seeds(tmp_path, fast_compile):
    """Through the one training loop: a classes12 hotspot-any-seed run starts hotspot runs of seeds 0 and 1
    (the no-leak check passes for both), whose realistic test sets hold the same healthy modules."""
    from test_train_tiny import TINY

    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train

    data = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 800, "Cell": 40, "Diode": 30}, seed=2)
    common = dict(arch=TINY, image_size=16, batch_size=16, lr=0.01, eval_batch_size=64, epochs=1, no_anomaly_pools="fixed")
    quiet = dict(progress=False, log=lambda m: None, dataset=data)
    train(TrainConfig(**common, seed=0, task="classes12", leave_out="hotspot-any-seed", workdir=str(tmp_path / "pre")),
          **quiet)
    pre = json.loads((tmp_path / "pre" / "manifest.json").read_text())
    assert pre["counts"]["train"]["Hot-Spot"] == 0 and pre["config"]["no_anomaly_pools"] == "fixed"
    healthy = []
    for seed in (0, 1):
        train(TrainConfig(**common, seed=seed, init_from=str(tmp_path / "pre"), workdir=str(tmp_path / f"hot{seed}")),
              **quiet)
        manifest = json.loads((tmp_path / f"hot{seed}" / "manifest.json").read_text())
        healthy.append(_healthy(data, manifest["splits"]["test_realistic"]) - _healthy(data, manifest["splits"]["test"]))
        config = json.loads((tmp_path / f"hot{seed}" / "config.json").read_text())
        assert config["run"]["no_anomaly_pools"] == "fixed" and config["initialisation"].startswith("in-domain")
    assert healthy[0] == healthy[1] and len(healthy[0]) == int(FIXED_POOL_SHARES["realistic"] * 800)


def test_real_dataset_fixed_pools_sizes_and_no_leak_for_seeds_0_to_4(real_dataset):
    pools = no_anomaly_pools(real_dataset, "fixed")
    assert {k: len(v) for k, v in pools.items()} == {"realistic": 4000, "pretrain": 3000, "draw": 3000}
    shared = make_split(get_task("classes12"), real_dataset, seed=0, leave_out="hotspot-any-seed", pools="fixed")
    used = set(shared.splits["train"]) | set(shared.splits["val"])
    n_other = int(np.isin(real_dataset.labels, [CLASS_NAMES.index(c) for c in CLASS_NAMES
                                                if c not in HOTSPOT_CLASSES + ("No-Anomaly",)]).sum())
    assert len(used) == n_other + 3000
    for seed in range(5):
        target = make_binary_split(real_dataset, ProtocolConfig(seed=seed, no_anomaly_pools="fixed"))
        real = target.splits["test_realistic"]
        assert len(_healthy(real_dataset, real)) == 4000 + 74 and len(real) == 4000 + 74 + 74
        check_no_leak([("shared", shared)], target)
