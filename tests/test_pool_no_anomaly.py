"""More fine-tuning negatives without a leak (issue 23, ``--pool-no-anomaly``): No-Anomaly images of the fixed layout's
pretraining pool join the training negatives; each epoch trains on the protocol's number of them, drawn afresh, so
the classes stay balanced and an epoch costs what it did; no validation or test image of any seed or fold is added."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hotspot_jax.data import ProtocolConfig, make_binary_split, materialize
from hotspot_jax.data.cv import make_fold_split
from hotspot_jax.data.protocol import no_anomaly_pools
from hotspot_jax.data.tasks import held_out_any_seed
from hotspot_jax.errors import ConfigError
from hotspot_jax.train import batching, levers
from test_reproduce_levers import fake_dataset
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

SIZES = {"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 800, "Cell": 40}


@pytest.fixture(scope="module")
def dataset():
    return fake_dataset(SIZES, seed=3)


def test_added_images_come_from_the_pretraining_pool_and_leave_every_held_out_split_alone(dataset):
    for seed, fold in ((0, None), (1, "2/5")):
        manifest = make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools="fixed"))
        if fold:
            manifest = make_fold_split(dataset, manifest, fold)
        arrays = dict(materialize(dataset, manifest))
        new_manifest, new_arrays = levers.add_pool_no_anomaly(dataset, manifest, arrays, 150, seed)
        added = set(new_arrays["train"].ids.tolist()) - set(arrays["train"].ids.tolist())
        assert len(added) == 150 and added <= {str(i) for i in no_anomaly_pools(dataset, "fixed")["pretrain"]}
        assert not added & held_out_any_seed(dataset)  # no seed validates or tests on them
        assert set(new_manifest.splits["train"]) == set(manifest.splits["train"]) | added
        for name in manifest.splits:
            if name != "train":  # validation, test and realistic test (a fold's val) unchanged
                assert new_manifest.splits[name] == manifest.splits[name]
                assert np.array_equal(new_arrays[name].ids, arrays[name].ids)
        assert (new_arrays["train"].labels == 0).sum() == (arrays["train"].labels == 0).sum() + 150
        assert new_manifest.counts["train"]["No-Anomaly"] == manifest.counts["train"]["No-Anomaly"] + 150
    assert levers.add_pool_no_anomaly(dataset, manifest, arrays, 0, 0) == (manifest, arrays)
    with pytest.raises(ConfigError, match="pretraining pool has 240"):
        levers.add_pool_no_anomaly(dataset, manifest, arrays, 241, 0)
    study = make_binary_split(dataset, ProtocolConfig(seed=0))
    with pytest.raises(ConfigError, match="needs --no-anomaly-pools fixed"):
        levers.add_pool_no_anomaly(dataset, study, dict(materialize(dataset, study)), 10, 0)


def test_each_epoch_trains_every_positive_and_the_protocols_number_of_negatives_drawn_afresh():
    labels = np.array([1] * 30 + [0] * 30 + [0] * 90)  # 30 hotspots, 30 protocol negatives, 90 added
    seen = set()
    for epoch in range(6):
        order = batching.epoch_batches(7, epoch, labels, 90, 10)
        assert order.shape == (batching.epoch_steps(labels, 90, 10), 10) == (6, 10)  # 60 images an epoch
        flat = order.ravel()
        assert len(set(flat.tolist())) == 60  # no image twice
        assert (labels[flat] == 1).sum() == 30 and (labels[flat] == 0).sum() == 30  # every hotspot, 30 negatives
        assert np.array_equal(order, batching.epoch_batches(7, epoch, labels, 90, 10))  # (seed, epoch) alone
        seen |= set(flat[labels[flat] == 0].tolist())
    assert batching.epoch_batches(7, 0, labels, 90, 8).shape == (7, 8)  # the last partial batch dropped as usual
    assert len(seen) > 60  # the epochs reach past the protocol's 30 negatives into the added ones
    # without added images: the plain epoch of every image
    assert np.array_equal(batching.epoch_batches(7, 2, labels, 0, 8), batching.train_batch_indices(7, 2, 150, 8))
    with pytest.raises(ConfigError, match="fewer No-Anomaly"):
        batching.epoch_steps(labels, 121, 8)


def test_option_errors():
    from test_train_tiny import TINY

    from hotspot_jax.train.config import TrainConfig

    for kwargs, message in (
        (dict(pool_no_anomaly=10), "needs the hotspot task and --no-anomaly-pools fixed"),
        (dict(pool_no_anomaly=-1, no_anomaly_pools="fixed"), "whole number >= 0"),
        (dict(pool_no_anomaly=10, no_anomaly_pools="fixed", limit_train=50), "--limit-train"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(arch=TINY, **kwargs).resolve()


def test_a_run_with_pool_negatives_trains_balanced_epochs_and_records_the_added_images(tmp_path, dataset,
                                                                                        fast_compile):
    from test_train_tiny import TINY

    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train

    common = dict(arch=TINY, image_size=16, batch_size=16, lr=0.01, eval_batch_size=64, epochs=1,
                  no_anomaly_pools="fixed", seed=0)
    quiet = dict(progress=False, log=lambda m: None, dataset=dataset)
    train(TrainConfig(**common, workdir=str(tmp_path / "plain")), **quiet)
    train(TrainConfig(**common, pool_no_anomaly=200, workdir=str(tmp_path / "pool")), **quiet)
    plain, pool = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("plain", "pool"))
    assert pool["steps_per_epoch"] == plain["steps_per_epoch"]  # an epoch costs what it did
    mp, mq = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("plain", "pool"))
    assert mq["counts"]["train"]["No-Anomaly"] == mp["counts"]["train"]["No-Anomaly"] + 200
    for name in ("val", "test", "test_realistic"):
        assert mq["splits"][name] == mp["splits"][name]
    assert pool["run"]["pool_no_anomaly"] == 200
