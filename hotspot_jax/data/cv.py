"""K-fold cross-validation inside a seed's hotspot training pool (issue 23): a larger validation reading for
choosing levers, with the real test sets never read.

Fold k of K of seed s starts from the seed's hotspot split (:func:`~hotspot_jax.data.protocol.make_binary_split`,
same pools). Its training hotspot *originals* (an image and its offline augmentations always stay together)
are dealt into K folds, stratified by class: each class is permuted with ``default_rng([s, K, CV_RNG_TAG])``,
the classes are laid end to end (Hot-Spot, Hot-Spot-Multi) and the i-th image goes to fold ``i mod K``, so
fold sizes differ by at most one per class and in total. The training No-Anomaly images, permuted by the
same stream, are cut into K runs, each the size its fold's hotspots ask for (the protocol's ratio x their
augmented count: 4 x the fold's hotspots in the study). The fold run's splits:

- ``val``: fold k's hotspots + as many of fold k's No-Anomaly images (the protocol's ratio, balanced);
- ``train``: the other folds' hotspots (augmented by ``materialize`` as usual) + the other folds' No-Anomaly
  images, which are the protocol's count (ratio x augmented hotspots; should rounding ever leave them short,
  fold k's No-Anomaly images outside its ``val`` make it up, recorded in the manifest); the rest of fold k's
  No-Anomaly images is unused;
- ``test``: the seed's own validation split (a second validation reading); no ``test`` or ``test_realistic``
  image of the seed is in any split, so a fold run never reads the test sets.

Every fold's images are images the seed's split trains on, so a fold run is leak-free exactly when its
starting point never saw that pool: true of the shared pretraining (``leave_out="hotspot-any-seed"``), false
of a per-seed one (``leave_out="hotspot"``), which :func:`~hotspot_jax.data.tasks.check_no_leak` refuses.
Invariants: tests/test_cv.py.
"""

from __future__ import annotations

import math
import re

import numpy as np

from hotspot_jax.data.classes import BINARY_CLASS_NAMES, CLASS_NAMES, HOTSPOT_CLASSES, NO_ANOMALY
from hotspot_jax.data.protocol import (SplitManifest, _augmented_count, _binary_labels, _count, _sorted_ids,
                                       _train_augmented_labels)
from hotspot_jax.errors import ConfigError

CV_RNG_TAG = 0xC5F0  # the fold deal's random stream: default_rng([seed, K, CV_RNG_TAG])
_FOLD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_cv_fold(text: str) -> tuple[int, int]:
    """``"k/K"`` -> ``(k, K)`` with 1 <= k <= K and K >= 2; ConfigError in one line otherwise."""
    m = _FOLD.match(str(text))
    if not m:
        raise ConfigError(f"--cv-fold expects k/K (fold k of K, e.g. 2/5), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 2:
        raise ConfigError(f"--cv-fold {text}: K must be at least 2 (K folds of the training pool)")
    if not 1 <= k <= n:
        raise ConfigError(f"--cv-fold {text}: the fold k must be 1 to {n} (folds are numbered from 1)")
    return k, n


def fold_label(k: int, n: int) -> str:
    """How a fold is written in options and manifests: ``"2/5"``."""
    return f"{k}/{n}"


def _deal(groups: list[np.ndarray], n_folds: int, rng: np.random.Generator) -> list[list[str]]:
    """Each group permuted, the groups laid end to end, the i-th id to fold i mod K (ids in deal order)."""
    order = np.concatenate([g[rng.permutation(len(g))] for g in groups]) if groups else np.array([], str)
    return [[str(i) for i in order[f::n_folds]] for f in range(n_folds)]


def training_folds(dataset, seed_manifest: SplitManifest, n_folds: int) -> dict[str, list[list[str]]]:
    """The K folds of the seed's training originals: ``{"hotspot": [...], "no_anomaly": [...]}``, each a list
    of K id lists; deterministic in (dataset, seed split, K). Hotspots are dealt stratified by class; the
    No-Anomaly images, permuted, are cut into K runs sized like their fold's share of the training set (the
    protocol's ratio x the fold's augmented hotspots, rounded, the rounding spread so the runs cover them all),
    so that the other folds' No-Anomaly images are what the protocol's ratio asks for a fold run's training."""
    train = np.asarray(seed_manifest.splits["train"], dtype=str)
    classes = dataset.labels[dataset.indices(train)]
    rng = np.random.default_rng([seed_manifest.seed, n_folds, CV_RNG_TAG])
    hot = _deal([train[classes == CLASS_NAMES.index(c)] for c in HOTSPOT_CLASSES], n_folds, rng)
    na = train[classes == CLASS_NAMES.index(NO_ANOMALY)]
    na = [str(i) for i in na[rng.permutation(len(na))]]
    ratio = seed_manifest.config.no_anomaly_per_hotspot
    sizes = [math.floor(ratio * _augmented_count(dataset, np.asarray(f), seed_manifest.config) + 0.5) for f in hot]
    k = 0
    while sum(sizes) != len(na):  # spread the rounding difference one image at a time over the folds
        step = 1 if sum(sizes) < len(na) else -1
        if sizes[k % n_folds] + step >= 0:
            sizes[k % n_folds] += step
        k += 1
    bounds = np.cumsum([0] + sizes)
    return {"hotspot": hot, "no_anomaly": [na[bounds[f]:bounds[f + 1]] for f in range(n_folds)]}


def make_fold_split(dataset, seed_manifest: SplitManifest, fold: str) -> SplitManifest:
    """The manifest of fold ``"k/K"`` of a seed's hotspot split (see the module docstring); ConfigError when
    the split is not a hotspot one, or K is so large that a fold has no hotspot or too few No-Anomaly images."""
    k, n = parse_cv_fold(fold)
    if seed_manifest.task != "binary":
        raise ConfigError(f"--cv-fold applies to the hotspot task, not {seed_manifest.task}")
    folds = training_folds(dataset, seed_manifest, n)
    n_hot = sum(len(f) for f in folds["hotspot"])
    if min(len(f) for f in folds["hotspot"]) == 0:
        raise ConfigError(f"--cv-fold {fold}: the training pool of seed {seed_manifest.seed} has {n_hot} hotspot "
                          f"image(s), so {n} folds leave a fold without a hotspot; use K <= {n_hot}")
    config = seed_manifest.config
    ratio = config.no_anomaly_per_hotspot
    hot_val = folds["hotspot"][k - 1]
    hot_train = [i for f, ids in enumerate(folds["hotspot"]) if f != k - 1 for i in ids]
    own_na = folds["no_anomaly"][k - 1]
    n_na_val = math.floor(ratio * len(hot_val) + 0.5)
    if n_na_val > len(own_na):
        raise ConfigError(f"--cv-fold {fold}: fold {k} holds {len(own_na)} training No-Anomaly image(s), its "
                          f"validation needs {n_na_val}; use fewer folds")
    na_val = own_na[:n_na_val]
    others = [i for f, ids in enumerate(folds["no_anomaly"]) if f != k - 1 for i in ids]
    candidates = others + own_na[n_na_val:]  # the other folds first; fold k's unused ones only to make up rounding
    n_na_train = math.floor(ratio * _augmented_count(dataset, np.asarray(hot_train), config) + 0.5)
    if n_na_train > len(candidates):
        raise ConfigError(f"--cv-fold {fold}: training needs {n_na_train} No-Anomaly images, the pool has "
                          f"{len(candidates)} outside the fold's validation")
    na_train = candidates[:n_na_train]
    topped_up = max(0, n_na_train - len(others))
    splits = {"train": _sorted_ids(hot_train + na_train), "val": _sorted_ids(list(hot_val) + na_val),
              "test": tuple(seed_manifest.splits["val"])}
    counts = {name: _count(_binary_labels(dataset, ids), 2, BINARY_CLASS_NAMES) for name, ids in splits.items()}
    counts["train_augmented"] = _count(_train_augmented_labels(dataset, splits["train"], config, "binary"), 2,
                                       BINARY_CLASS_NAMES)
    unused = sum(len(f) for f in folds["no_anomaly"]) - n_na_val - n_na_train
    cv = {
        "fold": k, "folds": n,
        "splits": {
            "train": f"folds other than {k} of {n} of seed {seed_manifest.seed}'s training pool (hotspots augmented)"
                     + (f"; {topped_up} No-Anomaly from fold {k} outside its validation (rounding)" if topped_up else ""),
            "val": f"fold {k} of {n} of seed {seed_manifest.seed}'s training pool",
            "test": f"seed {seed_manifest.seed}'s validation split (a second validation reading; the test sets are "
                    "not read)",
        },
        "training_hotspots": n_hot,
        "unused_no_anomaly": unused,
    }
    return SplitManifest(task="binary", config=config, splits=splits, counts=counts, class_names=BINARY_CLASS_NAMES,
                         dataset_sha256=seed_manifest.dataset_sha256, left_out=seed_manifest.left_out, cv=cv)
