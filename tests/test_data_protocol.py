"""The study's protocol on an in-memory dataset with the real class sizes of the binary task
(495 hotspots, 10,000 No-Anomaly): counts, disjointness, determinism, manifests, materialisation."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from hotspot_jax.data import (
    BINARY_CLASS_NAMES,
    CLASS_NAMES,
    AugmentConfig,
    ModuleImages,
    ProtocolConfig,
    SplitManifest,
    make_binary_split,
    make_multiclass_split,
    materialize,
    rotate180,
    split_counts,
)
from hotspot_jax.errors import ConfigError, DataError

SIZES = {"Hot-Spot": 249, "Hot-Spot-Multi": 246, "No-Anomaly": 10000, "Cell": 40, "Soiling": 7}


def fake_dataset(sizes=SIZES, seed=0) -> ModuleImages:
    """Random images with the given class sizes, ids 0..N-1 interleaved across classes."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, CLASS_NAMES.index(c), np.int32) for c, n in sizes.items()])
    labels = labels[rng.permutation(len(labels))]
    images = rng.integers(0, 256, size=(len(labels), 40, 24, 1), dtype=np.uint8)
    return ModuleImages(images=images, labels=labels, ids=np.arange(len(labels)).astype(str),
                        metadata_sha256="f" * 64)


@pytest.fixture(scope="module")
def dataset():
    return fake_dataset()


def test_split_counts_rounding():
    assert split_counts(495, ProtocolConfig()) == (347, 74, 74)
    assert split_counts(10, ProtocolConfig()) == (6, 2, 2)  # 1.5 rounds half up
    assert split_counts(3, ProtocolConfig()) == (3, 0, 0)


def test_binary_split_counts_and_disjointness(dataset):
    m = make_binary_split(dataset, ProtocolConfig(seed=0))
    hot = {CLASS_NAMES.index("Hot-Spot"), CLASS_NAMES.index("Hot-Spot-Multi")}
    na = CLASS_NAMES.index("No-Anomaly")
    lab = lambda ids: dataset.labels[dataset.indices(ids)]
    for split, (n_hot, n_na) in {"train": (347, 1388), "val": (74, 74), "test": (74, 74)}.items():
        labels = lab(m.splits[split])
        assert int(np.isin(labels, list(hot)).sum()) == n_hot, split
        assert int((labels == na).sum()) == n_na, split
        assert m.counts[split] == {"No-Anomaly": n_na, "Hotspot": n_hot}
    assert m.counts["train_augmented"] == {"No-Anomaly": 1388, "Hotspot": 1388}
    sets = {k: set(v) for k, v in m.splits.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    # test_realistic: the test hotspots + every No-Anomaly not in train or val
    na_all = set(dataset.ids_of_class("No-Anomaly"))
    real = sets["test_realistic"]
    assert real == {i for i in sets["test"] if int(lab([i])[0]) in hot} | (na_all - sets["train"] - sets["val"])
    assert len(real) == 74 + 10000 - 1388 - 74
    assert not real & sets["train"] and not real & sets["val"] and sets["test"] <= real


def test_binary_split_is_deterministic_in_seed(dataset):
    a = make_binary_split(dataset, ProtocolConfig(seed=3))
    b = make_binary_split(dataset, ProtocolConfig(seed=3))
    c = make_binary_split(dataset, ProtocolConfig(seed=4))
    assert a.to_dict() == b.to_dict()
    assert a.splits["test"] != c.splits["test"] and a.splits["train"] != c.splits["train"]


def test_manifest_json_roundtrip(dataset, tmp_path):
    m = make_binary_split(dataset, ProtocolConfig(seed=1, augment=AugmentConfig(sharpen_amount=1.0)))
    path = m.to_json(tmp_path / "sub" / "manifest.json")
    back = SplitManifest.from_json(path)
    assert back == m and back.config.augment.sharpen_amount == 1.0 and back.seed == 1
    d = json.loads(path.read_text())
    assert d["splits"]["test"] == list(m.splits["test"]) and d["task"] == "binary"
    assert not list(tmp_path.glob("sub/.*"))  # no temp file left behind
    s = m.summary()
    assert "1,388" in s and "test_realistic" in s and "seed 1" in s


def test_manifest_bad_files(tmp_path):
    with pytest.raises(DataError, match="no such manifest"):
        SplitManifest.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: cannot read the manifest"):
        SplitManifest.from_json(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="other.json: not a split manifest"):
        SplitManifest.from_json(tmp_path / "other.json")


def test_protocol_config_roundtrip_and_validation():
    cfg = ProtocolConfig(seed=5, val_fraction=0.1, augment_classes=("Hot-Spot",),
                         augment=AugmentConfig(rotate180=False))
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert ProtocolConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="val_fraction"):
        ProtocolConfig(val_fraction=1.2)
    with pytest.raises(ConfigError, match="augment_classes"):
        ProtocolConfig(augment_classes=("Hotspot",))
    with pytest.raises(ConfigError, match="unknown protocol option"):
        ProtocolConfig.from_dict({"sed": 1})


def test_materialize_binary(dataset):
    m = make_binary_split(dataset, ProtocolConfig())
    start = time.perf_counter()
    arrays = materialize(dataset, m)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0
    train = arrays["train"]
    assert len(train) == 2776 and train.images.dtype == np.uint8 and train.images.shape[1:] == (40, 24, 1)
    assert train.class_names == BINARY_CLASS_NAMES and train.class_counts() == {"No-Anomaly": 1388, "Hotspot": 1388}
    assert len(arrays["val"]) == len(arrays["test"]) == 148 and len(arrays["test_realistic"]) == 8612
    ids = list(train.ids)
    assert len(set(ids)) == 2776
    hot_ids = [i for i in ids if "@" not in i and train.labels[ids.index(i)] == 1]
    assert len(hot_ids) == 347
    for suffix in ("rot180", "gauss", "sharpen"):
        assert sum(i.endswith("@" + suffix) for i in ids) == 347
    k = ids.index(f"{hot_ids[0]}@rot180")
    np.testing.assert_array_equal(train.images[k], rotate180(dataset.images[dataset.indices([hot_ids[0]])[0]]))
    assert train.labels[k] == 1
    # labels agree with the dataset's classes
    for name, split in arrays.items():
        base = [i.split("@")[0] for i in split.ids]
        cls = dataset.labels[dataset.indices(base)]
        hot = np.isin(cls, [CLASS_NAMES.index("Hot-Spot"), CLASS_NAMES.index("Hot-Spot-Multi")])
        np.testing.assert_array_equal(split.labels, hot.astype(np.int32))


def test_materialize_rejects_other_dataset(dataset):
    m = make_binary_split(dataset, ProtocolConfig())
    other = ModuleImages(images=dataset.images, labels=dataset.labels, ids=dataset.ids, metadata_sha256="0" * 64)
    with pytest.raises(DataError, match="metadata sha256"):
        materialize(other, m)


def test_no_anomaly_ratio_and_augment_off(dataset):
    cfg = ProtocolConfig(no_anomaly_per_hotspot=2.0, augment=AugmentConfig(rotate180=False, gaussian=False,
                                                                            sharpen=False))
    m = make_binary_split(dataset, cfg)
    assert m.counts["train"] == {"No-Anomaly": 694, "Hotspot": 347}
    assert m.counts["test"] == {"No-Anomaly": 148, "Hotspot": 74}
    with pytest.raises(ConfigError, match="needs .* No-Anomaly images"):
        make_binary_split(dataset, ProtocolConfig(no_anomaly_per_hotspot=50.0))


def test_multiclass_split_is_stratified(dataset):
    m = make_multiclass_split(dataset, ProtocolConfig(seed=2))
    assert set(m.splits) == {"train", "val", "test"}
    for cls, n in SIZES.items():
        n_train, n_val, n_test = split_counts(n, m.config)
        assert (m.counts["train"][cls], m.counts["val"][cls], m.counts["test"][cls]) == (n_train, n_val, n_test)
    all_ids = [i for v in m.splits.values() for i in v]
    assert len(all_ids) == len(set(all_ids)) == len(dataset)
    arrays = materialize(dataset, m)
    assert arrays["train"].class_names == CLASS_NAMES
    n_hot_train = m.counts["train"]["Hot-Spot"] + m.counts["train"]["Hot-Spot-Multi"]
    assert len(arrays["train"]) == len(m.splits["train"]) + 3 * n_hot_train
    assert make_multiclass_split(dataset, ProtocolConfig(seed=2)).to_dict() == m.to_dict()
