"""The real InfraredSolarModules dataset (skipped with a reason where it is absent): class counts,
the study's split sizes, disjointness, determinism, augmentation on real images, cached loading."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hotspot_jax.data import (
    CLASS_NAMES,
    OFFICIAL_RELEASE,
    ProtocolConfig,
    gaussian_filter,
    load_dataset,
    make_binary_split,
    make_multiclass_split,
    materialize,
    rotate180,
    unsharp_mask,
)

pytestmark = pytest.mark.needs_data


def test_class_counts(real_dataset):
    counts = real_dataset.class_counts()
    assert counts["Hot-Spot"] == 249 and counts["Hot-Spot-Multi"] == 246 and counts["No-Anomaly"] == 10000
    assert sum(counts.values()) == len(real_dataset) == 20000
    assert real_dataset.images.shape == (20000, 40, 24, 1) and real_dataset.images.dtype == np.uint8
    assert len(set(real_dataset.ids)) == 20000


def test_shared_zip_is_the_official_release_content(real_dataset):
    assert real_dataset.metadata_sha256 == OFFICIAL_RELEASE.metadata_sha256


def test_binary_split_sizes_and_disjointness(real_dataset):
    m = make_binary_split(real_dataset, ProtocolConfig(seed=0))
    hot = {k: m.counts[k]["Hotspot"] for k in ("train", "val", "test")}
    na = {k: m.counts[k]["No-Anomaly"] for k in ("train", "val", "test")}
    assert hot == {"train": 347, "val": 74, "test": 74}
    assert na == {"train": 1388, "val": 74, "test": 74}
    assert m.counts["train_augmented"] == {"No-Anomaly": 1388, "Hotspot": 1388}
    s = {k: set(v) for k, v in m.splits.items()}
    assert not (s["train"] & s["val"] or s["train"] & s["test"] or s["val"] & s["test"])
    assert not (s["test_realistic"] & (s["train"] | s["val"]))
    assert len(s["test_realistic"]) == 74 + 10000 - 1388 - 74
    arrays = materialize(real_dataset, m)
    assert len(arrays["train"]) == 2776 and len(arrays["test"]) == 148
    ids = [i for split in arrays.values() for i in split.ids if "@" not in i]
    assert len(ids) - len(arrays["test"]) == len(set(ids))  # only test ids repeat (inside test_realistic)


def test_manifest_depends_only_on_seed(real_dataset):
    a = make_binary_split(real_dataset, ProtocolConfig(seed=11))
    b = make_binary_split(real_dataset, ProtocolConfig(seed=11))
    c = make_binary_split(real_dataset, ProtocolConfig(seed=12))
    assert a.to_dict() == b.to_dict()
    assert a.splits["test"] != c.splits["test"]


def test_materialize_is_fast(real_dataset):
    m = make_binary_split(real_dataset, ProtocolConfig())
    start = time.perf_counter()
    train = materialize(real_dataset, m)["train"]
    assert time.perf_counter() - start < 3.0 and len(train) == 2776


def test_augmented_real_images(real_dataset):
    m = make_binary_split(real_dataset, ProtocolConfig())
    train = materialize(real_dataset, m)["train"]
    ids = list(train.ids)
    base = [i for i in ids if "@" not in i and train.labels[ids.index(i)] == 1][:5]
    for i in base:
        orig = real_dataset.images[real_dataset.indices([i])[0]]
        for op, fn in (("rot180", rotate180), ("gauss", gaussian_filter), ("sharpen", unsharp_mask)):
            aug = train.images[ids.index(f"{i}@{op}")]
            assert aug.dtype == np.uint8 and aug.shape == (40, 24, 1)
            np.testing.assert_array_equal(aug, fn(orig))
        np.testing.assert_array_equal(train.images[ids.index(f"{i}@rot180")], orig[::-1, ::-1])
        blurred = train.images[ids.index(f"{i}@gauss")].astype(int)
        assert np.abs(np.diff(blurred, axis=0)).sum() <= np.abs(np.diff(orig.astype(int), axis=0)).sum()


def test_multiclass_split_on_real_data(real_dataset):
    m = make_multiclass_split(real_dataset, ProtocolConfig())
    assert sum(sum(m.counts[k].values()) for k in ("train", "val", "test")) == 20000
    assert m.counts["test"]["No-Anomaly"] == 1500 and m.counts["test"]["Hot-Spot"] == 37
    assert set(m.counts["train"]) == set(CLASS_NAMES)


def test_cached_load_is_fast(real_dataset, real_data_path, tmp_path_factory):
    # the session fixture built a cache; loading it again (fingerprint check + read) takes seconds
    cache = next(p for p in tmp_path_factory.getbasetemp().glob("real_tfds*"))
    start = time.perf_counter()
    again = load_dataset(real_data_path, cache_dir=cache, progress=False)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(again.images, real_dataset.images)
    assert elapsed < 15, f"cached load took {elapsed:.1f} s"
