"""The study's protocol: seeded splits (pure functions of dataset, seed and config), JSON manifests of
image ids, and materialisation of a manifest into arrays with offline augmentation of training images.

Binary task (the study): hotspot = Hot-Spot + Hot-Spot-Multi (495) vs No-Anomaly (10,000). The hotspots
are split 70/15/15 -> 347/74/74 (``test = round(0.15 n)``, ``val = round(0.15 n)``, train = the rest,
rounding half up); training hotspots are augmented offline x4 (original, rot180, gauss, sharpen) ->
1,388; No-Anomaly is undersampled without replacement to the same counts (1,388/74/74), disjoint
across splits. ``test_realistic`` = the test hotspots + every No-Anomaly image not used by train or
val (realistic prevalence). With ``no_anomaly_pools="fixed"`` (issue 23) the No-Anomaly images are first
partitioned once, independently of the seed (:func:`no_anomaly_pools`): a realistic-test pool (40%) that
is the healthy part of every seed's realistic test set, a pretraining pool (30%) that no hotspot split
ever uses, so one pretraining can start the hotspot runs of every seed, and a draw pool (30%) from which
each seed draws its 1,388/74/74. Multiclass task: the same 70/15/15 rounding within each of the 12 classes.
Anomaly task: the multiclass split with binary labels (1 = any of the 11 anomaly classes). Both may be
drawn from the images a binary split leaves for training (``exclude``), so that a run on them can start
a binary run (``hotspot_jax.data.tasks``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

import numpy as np

from hotspot_jax.data.arrays import ArraySplit, ModuleImages
from hotspot_jax.data.augment import AugmentConfig, augment_batch
from hotspot_jax.data.classes import ANOMALY_CLASS_NAMES, BINARY_CLASS_NAMES, CLASS_NAMES, HOTSPOT_CLASSES, NO_ANOMALY
from hotspot_jax.data.release import _id_sort_key
from hotspot_jax.errors import ConfigError, DataError

MANIFEST_FORMAT = "hotspot_jax.split_manifest/1"
TASKS = ("binary", "multiclass", "anomaly", "own")
NO_ANOMALY_POOL_LAYOUTS = ("study", "fixed")
# the "fixed" layout: shares of the No-Anomaly images (4,000 / 3,000 / 3,000 of 10,000), drawn once with this seed
FIXED_POOL_SHARES = {"realistic": 0.4, "pretrain": 0.3}
FIXED_POOL_SEED = 2022


@dataclass(frozen=True)
class ProtocolConfig:
    """Everything a split and its materialisation depend on (besides the dataset).

    ``val_fraction``/``test_fraction`` of each split group (train gets the rest);
    ``no_anomaly_per_hotspot`` No-Anomaly images per (augmented) hotspot image in each binary split
    (1.0 = balanced, the study); ``augment_classes`` the classes whose training images get the offline
    augmentation ``augment`` (both tasks).
    """

    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    no_anomaly_per_hotspot: float = 1.0
    augment_classes: tuple[str, ...] = HOTSPOT_CLASSES
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    no_anomaly_pools: str = "study"  # study | fixed (see the module docstring and no_anomaly_pools())

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {v!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"val_fraction + test_fraction must be < 1, got "
                              f"{self.val_fraction} + {self.test_fraction}")
        _check_pool_layout(self.no_anomaly_pools)
        if not self.no_anomaly_per_hotspot > 0:
            raise ConfigError(f"no_anomaly_per_hotspot must be > 0, got {self.no_anomaly_per_hotspot!r}")
        object.__setattr__(self, "augment_classes", tuple(self.augment_classes))
        bad = [c for c in self.augment_classes if c not in CLASS_NAMES]
        if bad:
            raise ConfigError(f"augment_classes: unknown class(es) {', '.join(bad)}; known: {', '.join(CLASS_NAMES)}")
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig.from_dict(self.augment))

    def to_dict(self) -> dict:
        """JSON-serialisable form (``from_dict`` inverts it)."""
        return {"seed": int(self.seed), "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "no_anomaly_per_hotspot": self.no_anomaly_per_hotspot,
                "augment_classes": list(self.augment_classes), "augment": self.augment.to_dict(),
                # only when not the study's, so manifests written before the option existed stay byte-identical
                **({"no_anomaly_pools": self.no_anomaly_pools} if self.no_anomaly_pools != "study" else {})}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ProtocolConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown protocol option(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if "augment" in d:
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        if "augment_classes" in d:
            d["augment_classes"] = tuple(d["augment_classes"])
        return cls(**d)


def split_counts(n: int, config: ProtocolConfig) -> tuple[int, int, int]:
    """(train, val, test) sizes for a group of ``n``: test and val rounded half up, train the rest."""
    n_test = math.floor(config.test_fraction * n + 0.5)
    n_val = math.floor(config.val_fraction * n + 0.5)
    return n - n_val - n_test, n_val, n_test


def _sorted_ids(ids) -> tuple[str, ...]:
    return tuple(sorted((str(i) for i in ids), key=_id_sort_key))


@dataclass(frozen=True)
class SplitManifest:
    """Which image ids each split uses, and everything needed to reproduce it.

    ``splits`` maps split name -> source image ids (sorted; augmented copies are not listed, they follow
    from ``config.augment``); ``counts`` maps split name -> images per class of ``class_names``, with
    ``train_augmented`` the training counts after augmentation.
    """

    task: str
    config: ProtocolConfig
    splits: Mapping[str, tuple[str, ...]]
    counts: Mapping[str, Mapping[str, int]]
    class_names: tuple[str, ...]
    dataset_sha256: str = ""
    left_out: str = ""  # the split whose validation and test images this one leaves out, e.g. "binary seed 0"
    cv: Mapping | None = None  # a cross-validation fold (hotspot_jax.data.cv): fold, folds, what each split is

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    def ids(self, split: str) -> tuple[str, ...]:
        """The source ids of ``split`` (ConfigError naming the known splits if unknown)."""
        if split not in self.splits:
            raise ConfigError(f"unknown split {split!r}; this manifest has {', '.join(self.splits)}")
        return self.splits[split]

    def to_dict(self) -> dict:
        out = {"format": MANIFEST_FORMAT, "task": self.task, "seed": self.seed,
               "dataset_sha256": self.dataset_sha256, "class_names": list(self.class_names),
               "config": self.config.to_dict(),
               "counts": {k: dict(v) for k, v in self.counts.items()},
               "splits": {k: list(v) for k, v in self.splits.items()}}
        if self.left_out:  # absent otherwise, so manifests of earlier runs compare equal
            out["left_out"] = self.left_out
        if self.cv:  # likewise: only a cross-validation fold's manifest has it
            out["cv"] = dict(self.cv)
        return out

    @classmethod
    def from_dict(cls, d: Mapping, *, where: str = "manifest") -> "SplitManifest":
        try:
            if d.get("format") != MANIFEST_FORMAT:
                raise DataError(f"{where}: not a split manifest (format {d.get('format')!r}, expected "
                                f"{MANIFEST_FORMAT!r})")
            if d["task"] not in TASKS:
                raise DataError(f"{where}: unknown task {d['task']!r}")
            config = ProtocolConfig.from_dict(d["config"])
            return cls(task=d["task"], config=config,
                       splits={k: tuple(str(i) for i in v) for k, v in d["splits"].items()},
                       counts={k: {c: int(n) for c, n in v.items()} for k, v in d["counts"].items()},
                       class_names=tuple(d["class_names"]), dataset_sha256=str(d.get("dataset_sha256", "")),
                       left_out=str(d.get("left_out", "")), cv=d.get("cv") or None)
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{where}: malformed split manifest ({type(err).__name__}: {err})") from None
        except ConfigError as err:
            raise DataError(f"{where}: {err}") from None

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the manifest as JSON (to a temporary file, then renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "SplitManifest":
        """Read a manifest written by :meth:`to_json`; DataError naming the file if it is not one."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: no such manifest file") from None
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read the manifest ({err})") from None
        if not isinstance(d, dict):
            raise DataError(f"{path}: not a split manifest (expected a JSON object)")
        return cls.from_dict(d, where=str(path))

    def summary(self) -> str:
        """A plain-text table: images per class for every split (train also after augmentation)."""
        names = list(self.class_names)
        rows = [(split, [int(counts.get(c, 0)) for c in names]) for split, counts in self.counts.items()
                if any(counts.values()) or split in self.splits]
        shown = [c for i, c in enumerate(names) if any(r[1][i] for r in rows)] or names
        idx = [names.index(c) for c in shown]
        header = ["split"] + shown + ["total"]
        body = [[split] + [f"{vals[i]:,}" for i in idx] + [f"{sum(vals):,}"] for split, vals in rows]
        widths = [max(len(r[k]) for r in [header] + body) for k in range(len(header))]
        fmt = lambda r: "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths)))
        lines = [f"{self.task} task, seed {self.seed}, dataset metadata sha256 {self.dataset_sha256[:12] or '?'}",
                 fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]
        if self.cv:
            lines.append(f"cross-validation fold {self.cv['fold']} of {self.cv['folds']}:")
            lines += [f"  {split}: {what}" for split, what in self.cv.get("splits", {}).items()]
        return "\n".join(lines)


def _augmented_count(dataset: ModuleImages, ids, config: ProtocolConfig) -> int:
    """Number of training images after offline augmentation of ``ids``."""
    if not len(ids):
        return 0
    labels = dataset.labels[dataset.indices(ids)]
    aug = np.isin(labels, [CLASS_NAMES.index(c) for c in config.augment_classes])
    return int(len(ids) + aug.sum() * len(config.augment.ops))


def _binary_labels(dataset: ModuleImages, ids) -> np.ndarray:
    hot = [CLASS_NAMES.index(c) for c in HOTSPOT_CLASSES]
    return np.isin(dataset.labels[dataset.indices(ids)], hot).astype(np.int32)


def _count(labels: np.ndarray, n_classes: int, names: tuple[str, ...]) -> dict[str, int]:
    return {c: int(n) for c, n in zip(names, np.bincount(labels, minlength=n_classes))}


def _anomaly_labels(dataset: ModuleImages, ids) -> np.ndarray:
    return (dataset.labels[dataset.indices(ids)] != CLASS_NAMES.index(NO_ANOMALY)).astype(np.int32)


def task_labels(task: str, classes: np.ndarray) -> np.ndarray:
    """Labels of a manifest ``task`` from 12-class labels: hotspot (binary), anomaly, or the classes."""
    if task == "binary":
        return np.isin(classes, [CLASS_NAMES.index(c) for c in HOTSPOT_CLASSES]).astype(np.int32)
    if task == "anomaly":
        return (classes != CLASS_NAMES.index(NO_ANOMALY)).astype(np.int32)
    return classes.astype(np.int32)  # multiclass, own


def _train_augmented_labels(dataset: ModuleImages, ids, config: ProtocolConfig, task: str) -> np.ndarray:
    """Labels of the training set after augmentation (originals, then each op's copies)."""
    labels = task_labels(task, dataset.labels[dataset.indices(ids)])
    classes = dataset.labels[dataset.indices(ids)]
    aug = np.isin(classes, [CLASS_NAMES.index(c) for c in config.augment_classes])
    return np.concatenate([labels] + [labels[aug]] * len(config.augment.ops))


def _check_pool_layout(layout: str) -> str:
    if layout not in NO_ANOMALY_POOL_LAYOUTS:
        raise ConfigError(f"unknown No-Anomaly pool layout {layout!r}; use one of {', '.join(NO_ANOMALY_POOL_LAYOUTS)}")
    return layout


def no_anomaly_pools(dataset: ModuleImages, layout: str) -> dict[str, np.ndarray]:
    """The No-Anomaly ids by use: ``draw`` (what a seed's split draws from), and for the ``fixed`` layout
    ``realistic`` and ``pretrain``, disjoint, each sorted, the same for every seed (tests/test_pools.py)."""
    na = dataset.ids_of_class(NO_ANOMALY)
    if _check_pool_layout(layout) == "study":
        return {"draw": na}
    perm = na[np.random.default_rng(FIXED_POOL_SEED).permutation(len(na))]
    n_real = math.floor(FIXED_POOL_SHARES["realistic"] * len(na) + 0.5)
    n_pre = math.floor(FIXED_POOL_SHARES["pretrain"] * len(na) + 0.5)
    return {"realistic": _sorted_ids(perm[:n_real]), "pretrain": _sorted_ids(perm[n_real:n_real + n_pre]),
            "draw": _sorted_ids(perm[n_real + n_pre:])}


def make_binary_split(dataset: ModuleImages, config: ProtocolConfig = ProtocolConfig()) -> SplitManifest:
    """The study's hotspot-vs-No-Anomaly split: splits ``train``, ``val``, ``test``, ``test_realistic``.

    Deterministic in (dataset, config): one ``numpy.random.default_rng(config.seed)`` permutes the
    hotspot ids, then the No-Anomaly ids (both in dataset id order).
    """
    hot = dataset.ids_of_class(*HOTSPOT_CLASSES)
    pools = no_anomaly_pools(dataset, config.no_anomaly_pools)
    na = np.asarray(pools["draw"], dtype=dataset.ids.dtype)
    if not len(hot) or not len(na):
        raise DataError(f"the dataset has {len(hot)} hotspot and {len(na)} No-Anomaly images; the binary "
                        f"task needs both")
    rng = np.random.default_rng(config.seed)
    n_train, n_val, n_test = split_counts(len(hot), config)
    perm = hot[rng.permutation(len(hot))]
    hot_test, hot_val, hot_train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    ratio = config.no_anomaly_per_hotspot
    want = [math.floor(ratio * n + 0.5) for n in (n_test, n_val, _augmented_count(dataset, hot_train, config))]
    if sum(want) > len(na):
        where = "the dataset has" if config.no_anomaly_pools == "study" else "the fixed layout's draw pool has"
        raise ConfigError(f"no_anomaly_per_hotspot={ratio} needs {sum(want)} No-Anomaly images "
                          f"(test {want[0]}, val {want[1]}, train {want[2]}); {where} {len(na)}")
    na_perm = na[rng.permutation(len(na))]
    na_test = na_perm[:want[0]]
    na_val = na_perm[want[0]:want[0] + want[1]]
    na_train = na_perm[want[0] + want[1]:sum(want)]
    splits = {
        "train": _sorted_ids(np.concatenate([hot_train, na_train])),
        "val": _sorted_ids(np.concatenate([hot_val, na_val])),
        "test": _sorted_ids(np.concatenate([hot_test, na_test])),
        # study: every No-Anomaly image that train and val do not use (the test ones and all never drawn);
        # fixed: the test ones and the realistic pool, the same healthy modules for every seed
        "test_realistic": _sorted_ids(np.concatenate([
            hot_test, na_test, np.asarray(pools["realistic"], dtype=na.dtype) if "realistic" in pools
            else na_perm[sum(want):]])),
    }
    counts = {name: _count(_binary_labels(dataset, ids), 2, BINARY_CLASS_NAMES) for name, ids in splits.items()}
    counts["train_augmented"] = _count(_train_augmented_labels(dataset, splits["train"], config, "binary"), 2,
                                       BINARY_CLASS_NAMES)
    return SplitManifest(task="binary", config=config, splits=splits, counts=counts,
                         class_names=BINARY_CLASS_NAMES, dataset_sha256=dataset.metadata_sha256)


def make_multiclass_split(dataset: ModuleImages, config: ProtocolConfig = ProtocolConfig(), *,
                          exclude=(), left_out: str = "", binary_labels: bool = False) -> SplitManifest:
    """The 12-class task: a stratified split within each class (splits ``train``, ``val``, ``test``).

    ``config.no_anomaly_per_hotspot`` is unused; training images of ``config.augment_classes`` are
    augmented by :func:`materialize`. Images whose id is in ``exclude`` take no part (``left_out`` names
    where they come from, recorded in the manifest). ``binary_labels``: the anomaly task, the same split
    with No-Anomaly vs any anomaly.
    """
    if not len(dataset):
        raise DataError("the dataset is empty")
    excluded = {str(i) for i in exclude}
    rng = np.random.default_rng(config.seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for k, name in enumerate(CLASS_NAMES):
        ids = dataset.ids[dataset.labels == k]
        if excluded:
            ids = np.array([i for i in ids if str(i) not in excluded], dtype=dataset.ids.dtype)
        if not len(ids):
            continue
        n_train, n_val, n_test = split_counts(len(ids), config)
        perm = ids[rng.permutation(len(ids))]
        parts["test"].append(perm[:n_test])
        parts["val"].append(perm[n_test:n_test + n_val])
        parts["train"].append(perm[n_test + n_val:])
    splits = {name: _sorted_ids(np.concatenate(p)) for name, p in parts.items()}
    if binary_labels:
        task, names = "anomaly", ANOMALY_CLASS_NAMES
        label = lambda ids: _anomaly_labels(dataset, ids)  # noqa: E731
        augmented = _count(_train_augmented_labels(dataset, splits["train"], config, "anomaly"), 2, names)
    else:
        task, names = "multiclass", CLASS_NAMES
        label = lambda ids: dataset.labels[dataset.indices(ids)]  # noqa: E731
        augmented = _count(_train_augmented_labels(dataset, splits["train"], config, "multiclass"), len(names), names)
    counts = {name: _count(label(ids), len(names), names) for name, ids in splits.items()}
    counts["train_augmented"] = augmented
    return SplitManifest(task=task, config=config, splits=splits, counts=counts, class_names=names,
                         dataset_sha256=dataset.metadata_sha256, left_out=left_out)


def make_own_split(dataset: ModuleImages, config: ProtocolConfig = ProtocolConfig()) -> SplitManifest:
    """One's own images (``dataset.own``): 70/15/15 within each of its classes, seeded; no augmentation."""
    rng = np.random.default_rng(config.seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for k, name in enumerate(dataset.class_names):
        ids = dataset.ids[dataset.labels == k]
        n_train, n_val, n_test = split_counts(len(ids), config)
        perm = ids[rng.permutation(len(ids))]
        parts["test"].append(perm[:n_test])
        parts["val"].append(perm[n_test:n_test + n_val])
        parts["train"].append(perm[n_test + n_val:])
    names = tuple(dataset.class_names)
    splits = {name: _sorted_ids(np.concatenate(p)) for name, p in parts.items()}
    counts = {name: _count(dataset.labels[dataset.indices(ids)], len(names), names) for name, ids in splits.items()}
    counts["train_augmented"] = dict(counts["train"])
    return SplitManifest(task="own", config=config, splits=splits, counts=counts, class_names=names,
                         dataset_sha256=dataset.metadata_sha256)


def materialize(dataset: ModuleImages, manifest: SplitManifest, config: ProtocolConfig | None = None
                ) -> dict[str, ArraySplit]:
    """Arrays for every split of ``manifest``; ``train`` gets the offline augmentation of ``config``
    (default ``manifest.config``): originals first (manifest order), then one block per op whose ids
    are ``"<id>@<op>"``. Labels are binary (1 = hotspot) for the binary task, else CLASS_NAMES indices.
    """
    config = manifest.config if config is None else config
    if manifest.dataset_sha256 and dataset.metadata_sha256 and manifest.dataset_sha256 != dataset.metadata_sha256:
        raise DataError(f"the split manifest was made from the dataset with metadata sha256 "
                        f"{manifest.dataset_sha256[:12]}..., this dataset has {dataset.metadata_sha256[:12]}...")
    class_names = tuple(manifest.class_names)
    aug_classes = np.array([CLASS_NAMES.index(c) for c in config.augment_classes], dtype=np.int32)
    out: dict[str, ArraySplit] = {}
    for name, ids in manifest.splits.items():
        try:
            idx = dataset.indices(ids)
        except KeyError as err:
            raise DataError(f"split {name!r} of the manifest: {err.args[0]}") from None
        images, classes = dataset.images[idx], dataset.labels[idx]
        labels = task_labels(manifest.task, classes)
        split_ids = dataset.ids[idx]
        if name == "train" and config.augment.ops:
            aug = np.isin(classes, aug_classes)
            aug_images, aug_ids = augment_batch(images[aug], split_ids[aug], config.augment)
            k = int(aug.sum())
            images = np.concatenate([images, aug_images[k:]])
            split_ids = np.concatenate([split_ids, aug_ids[k:]])
            labels = np.concatenate([labels] + [labels[aug]] * len(config.augment.ops))
        out[name] = ArraySplit(images=images, labels=labels.astype(np.int32), ids=np.asarray(split_ids, dtype=str),
                               class_names=class_names)
    return out
