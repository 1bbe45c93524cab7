"""The tasks a run can learn, each with its documented, seeded, stratified split (see docs/tasks.md).

- ``hotspot`` (the study's, the default): Hot-Spot + Hot-Spot-Multi vs No-Anomaly, the study's split
  (:func:`~hotspot_jax.data.protocol.make_binary_split`): train/val/test plus the realistic-prevalence test.
- ``anomaly``: any of the 11 anomaly classes vs No-Anomaly over all 20,000 images; 70/15/15 within each
  of the 12 classes, so every anomaly kind is in every split in proportion.
- ``classes12``: all 12 classes, the same 70/15/15 within each class. Classes with fewer than
  :data:`RARE_TRAIN_IMAGES` training images (Diode-Multi, Soiling, Hot-Spot, Hot-Spot-Multi) get the study's
  offline augmentation x4 (original, rot180, Gaussian, sharpen), as the study does for hotspots.

- ``own``: one's own labelled images (``--data`` an image folder or CSV, hotspot_jax.data.own_data), their
  own classes, 70/15/15 within each class, no offline augmentation. With two classes one of which is named
  like No-Anomaly (:data:`NEGATIVE_NAMES`, any case), the other is the positive class and the run gets the
  binary metrics and an operating point; otherwise the many-class metrics.

``leave_out="hotspot"`` draws an ``anomaly``/``classes12`` split only from the images that the hotspot
split of the same seed uses for training or not at all (never its validation, test or realistic test
images), with 85/15/0: such a run (its checkpoint chosen on its own validation images) can start a
hotspot run with ``--init-from`` without leaking (checked by :func:`check_no_leak`,
tests/test_tasks.py). ``leave_out="hotspot-any-seed"`` (with the ``fixed`` No-Anomaly pools,
:func:`~hotspot_jax.data.protocol.no_anomaly_pools`) draws it only from the ten other anomaly classes and
the pretraining pool of No-Anomaly images, which no hotspot split of any seed validates or tests on: one
such run can start the hotspot runs of every seed (tests/test_pools.py).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from hotspot_jax.data.classes import ANOMALY_CLASS_NAMES, BINARY_CLASS_NAMES, CLASS_NAMES, HOTSPOT_CLASSES
from hotspot_jax.data.protocol import ProtocolConfig, SplitManifest, make_binary_split, make_multiclass_split
from hotspot_jax.errors import ConfigError, DataError

TASK_NAMES = ("hotspot", "anomaly", "classes12", "own")
NEGATIVE_NAMES = ("no-anomaly", "no_anomaly", "noanomaly", "healthy", "normal", "ok")  # own data's negative class
RARE_TRAIN_IMAGES = 300  # classes12: classes with fewer training originals are augmented offline x4
HELD_OUT = ("val", "test", "test_realistic")  # splits no image of which may reach another run's training
LEAVE_OUTS = ("hotspot", "hotspot-any-seed")


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's classes and the manifest task it is split by; ``positive`` is the positive class of a
    two-class task (None for classes12)."""

    name: str
    manifest_task: str
    class_names: tuple[str, ...]
    positive: int | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def binary(self) -> bool:
        return self.positive is not None


TASKS = {
    "hotspot": Task("hotspot", "binary", BINARY_CLASS_NAMES, 1),
    "anomaly": Task("anomaly", "anomaly", ANOMALY_CLASS_NAMES, 1),
    "classes12": Task("classes12", "multiclass", CLASS_NAMES, None),
}
_BY_MANIFEST = {t.manifest_task: t for t in TASKS.values()}


def get_task(name: str | None, class_names=None) -> Task:
    """The task called ``name`` (None: hotspot, what runs before tasks existed were); ``own`` needs the
    data's ``class_names``; ConfigError otherwise."""
    if name is None:
        return TASKS["hotspot"]
    if name == "own":
        if not class_names:
            raise ConfigError("the own-data task needs the data's class names")
        return own_task(class_names)
    if name not in TASKS:
        raise ConfigError(f"unknown --task {name!r}; use one of {', '.join(TASK_NAMES)}")
    return TASKS[name]


def own_task(class_names) -> Task:
    """The task of one's own data: its classes; binary when there are two and one is a negative name."""
    names = tuple(class_names)
    negative = [k for k, c in enumerate(names) if c.lower() in NEGATIVE_NAMES]
    binary = len(names) == 2 and negative == [0]  # own_data puts the negative class first (label 0)
    return Task("own", "own", names, 1 if binary else None)


def task_of_config(config: dict) -> Task:
    """A run's task from its config.json (``classes`` holds an own-data run's class names)."""
    return get_task(config["run"].get("task", "hotspot"), config.get("classes"))


def task_of_manifest(manifest: SplitManifest) -> Task:
    if manifest.task == "own":
        return own_task(manifest.class_names)
    return _BY_MANIFEST[manifest.task]


def held_out_ids(dataset, seed: int, pools: str = "study") -> set[str]:
    """Ids of every validation, test and realistic-test image of the hotspot split of ``seed``."""
    manifest = make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools=pools))
    return {i for name in HELD_OUT for i in manifest.splits.get(name, ())}


def held_out_any_seed(dataset) -> set[str]:
    """Ids a hotspot split of some seed may validate or test on, with the ``fixed`` pools: every hotspot and
    every No-Anomaly image outside the pretraining pool."""
    from hotspot_jax.data.protocol import no_anomaly_pools

    pools = no_anomaly_pools(dataset, "fixed")
    return ({str(i) for i in dataset.ids_of_class(*HOTSPOT_CLASSES)}
            | {str(i) for i in pools["realistic"]} | {str(i) for i in pools["draw"]})


def rare_classes(dataset, config: ProtocolConfig, exclude: set[str]) -> tuple[str, ...]:
    """classes12's offline-augmented classes: fewer than RARE_TRAIN_IMAGES training originals."""
    probe = make_multiclass_split(dataset, dataclasses.replace(config, augment_classes=()), exclude=exclude)
    counts = probe.counts["train"]
    return tuple(c for c in CLASS_NAMES if 0 < counts.get(c, 0) < RARE_TRAIN_IMAGES)


def make_split(task: Task, dataset, seed: int, leave_out: str | None = None, pools: str = "study") -> SplitManifest:
    """The seeded split of ``task`` (see the module docstring); deterministic in (dataset, seed, leave_out,
    pools); ``pools`` is the No-Anomaly pool layout of the hotspot split (its own, or the one left out)."""
    if dataset.own != (task.name == "own"):
        raise ConfigError("own images (an image folder or CSV given as --data) train the 'own' task, and only "
                          f"they do; got task {task.name} with {'own images' if dataset.own else 'InfraredSolarModules'}")
    if task.name == "own":
        if leave_out:
            raise ConfigError("--leave-out applies to InfraredSolarModules runs, not to one's own images")
        from hotspot_jax.data.protocol import make_own_split

        return make_own_split(dataset, ProtocolConfig(seed=seed, augment_classes=()))
    if task.name == "hotspot":
        if leave_out:
            raise ConfigError("--leave-out applies to the anomaly and classes12 tasks (a hotspot run leaves "
                              "nothing out of itself)")
        return make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools=pools))
    if pools != "study" and not leave_out:
        raise ConfigError(f"the No-Anomaly pool layout {pools!r} belongs to the hotspot split; an {task.name} run "
                          "uses it only to leave that split out (--leave-out)")
    exclude: set[str] = set()
    config = ProtocolConfig(seed=seed, augment_classes=())
    left_out = ""
    if leave_out:
        if leave_out not in LEAVE_OUTS:
            raise ConfigError(f"--leave-out {leave_out!r}: use one of {', '.join(LEAVE_OUTS)}")
        if leave_out == "hotspot":
            exclude = held_out_ids(dataset, seed, pools)
            left_out = f"hotspot split of seed {seed}: its validation, test and realistic-test images"
            if pools != "study":
                left_out += f" ({pools} No-Anomaly pools)"
        else:
            if pools != "fixed":
                raise ConfigError("--leave-out hotspot-any-seed needs the fixed No-Anomaly pools "
                                  "(--no-anomaly-pools fixed): only they keep images out of every seed's split")
            exclude = held_out_any_seed(dataset)
            left_out = ("hotspot splits of every seed (fixed No-Anomaly pools): every hotspot, the realistic-test "
                        "and draw pools of No-Anomaly")
        # recorded in the manifest: the pools of the hotspot split this one leaves out
        config = dataclasses.replace(config, val_fraction=0.15, test_fraction=0.0, no_anomaly_pools=pools)
    if task.name == "classes12":
        config = dataclasses.replace(config, augment_classes=rare_classes(dataset, config, exclude))
    manifest = make_multiclass_split(dataset, config, exclude=exclude, left_out=left_out,
                                     binary_labels=task.name == "anomaly")
    if len(manifest.splits["val"]) == 0 or len(manifest.splits["train"]) == 0:
        raise DataError(f"the {task.name} split has no training or validation images; the dataset is too small")
    return manifest


def source_ids(ids: Iterable[str]) -> set[str]:
    """The dataset ids behind split ids (an augmented copy ``<id>@<op>`` is its source image)."""
    return {str(i).split("@")[0] for i in ids}


def check_no_leak(source_manifests: Iterable[tuple[str, SplitManifest]], target: SplitManifest) -> None:
    """DataError when an image that trained a source run (its training split) or chose its checkpoint (its
    validation split) is a validation or test image of ``target``; ``source_manifests`` is
    ``(where, manifest)`` for every run of an ``--init-from`` chain."""
    held = {i for name in HELD_OUT for i in target.splits.get(name, ())}
    for where, manifest in source_manifests:
        if manifest.dataset_sha256 and target.dataset_sha256 and manifest.dataset_sha256 != target.dataset_sha256:
            continue  # another dataset (own data): ids do not name the same images
        used = source_ids(manifest.splits.get("train", ())) | source_ids(manifest.splits.get("val", ()))
        leaked = sorted(used & held, key=lambda i: (len(i), i))
        if leaked:
            fix = (f"train the source with --leave-out {'hotspot' if target.task == 'binary' else '...'} and the "
                   "same --seed")
            if target.cv:  # a fold validates on the seed's training pool, which a per-seed leave-out run trained on
                fix = ("a cross-validation fold validates on the seed's training pool: start it from a run with "
                       "--leave-out hotspot-any-seed --no-anomaly-pools fixed, or from scratch")
            raise DataError(
                f"--init-from {where}: {len(leaked)} image(s) that trained or selected that run are validation or "
                f"test images of this run (e.g. {', '.join(leaked[:3])}); {fix}"
            )


def positive_scores(task: Task, class_probs: np.ndarray) -> np.ndarray:
    """The positive class's probability of a two-class task; for classes12 the hotspot-vs-rest score,
    P(Hot-Spot) + P(Hot-Spot-Multi); for one's own many classes the predicted class's probability."""
    if task.binary:
        return class_probs[:, task.positive]
    if task.name == "own":
        return class_probs.max(-1)
    return class_probs[:, [CLASS_NAMES.index(c) for c in HOTSPOT_CLASSES]].sum(-1)
