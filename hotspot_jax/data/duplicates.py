"""Pixel twins: images of a dataset that are identical pixel for pixel under different ids, and the validation
or test images whose twin trained or selected a run (see docs/data.md).

The id-based no-leak check (:func:`~hotspot_jax.data.tasks.check_no_leak`) cannot see a twin: in
InfraredSolarModules Hot-Spot 6888 is Offline-Module 483 under another id, and 22 such pairs exist. A twin is
reported, not refused: committed runs have such images in their splits, and their splits must not change.
:func:`training_twins` finds every validation, test or realistic-test image of a run whose twin (another id;
an augmented copy ``<id>@<op>`` counts as its source, never as a twin of it) is in the run's own training
split, or in the training or validation split of a run of its ``--init-from`` chain; train.loop prints
:func:`twin_note` at run start and records :func:`Twin.to_dict` in config.json (tests/test_duplicates.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from pathlib import Path
from typing import Iterable

from hotspot_jax.data.protocol import SplitManifest
from hotspot_jax.data.release import _id_sort_key
from hotspot_jax.data.tasks import HELD_OUT, source_ids

_GROUPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # dataset -> its groups, computed once
REPORT_SEEDS = (0, 1, 2, 3, 4)  # the seeds the duplicate report checks (issue 23's five seeds)
CV_FOLDS = 5  # the report's cross-validation folds (reproduce.py --cv 5)
SHOWN = 6  # twins named in the one-line note; config.json holds them all


def pixel_groups(dataset) -> tuple[tuple[str, ...], ...]:
    """The groups of 2+ ids whose uint8 images (as the dataset holds them) are identical: each group sorted
    by id, the groups by their first id. Computed once per dataset object (a sha256 per image: cheap)."""
    cached = _GROUPS.get(dataset)
    if cached is not None:
        return cached
    by_hash: dict[bytes, list[str]] = {}
    for image_id, image in zip(dataset.ids, dataset.images):
        by_hash.setdefault(hashlib.sha256(image.tobytes()).digest(), []).append(str(image_id))
    groups = tuple(sorted((tuple(sorted(g, key=_id_sort_key)) for g in by_hash.values() if len(g) > 1),
                          key=lambda g: _id_sort_key(g[0])))
    _GROUPS[dataset] = groups
    return groups


def twin_map(dataset) -> dict[str, tuple[str, ...]]:
    """Each id that has pixel twins -> the other ids of its group."""
    return {i: tuple(j for j in g if j != i) for g in pixel_groups(dataset) for i in g}


def class_of(dataset, image_id: str) -> str:
    return dataset.class_names[int(dataset.labels[dataset.indices([image_id])[0]])]


@dataclasses.dataclass(frozen=True)
class Twin:
    """A held-out image ``held`` (class, split) whose pixel twin ``twin`` (class) was used as ``use``: "train"
    (the run's own training split) or "train of --init-from NAME" / "val of --init-from NAME"."""

    held: str
    held_class: str
    split: str
    twin: str
    twin_class: str
    use: str

    def describe(self) -> str:
        return f"{self.held} ({self.held_class}, {self.split}) = {self.twin} ({self.twin_class}, {self.use})"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def training_twins(dataset, target: SplitManifest, sources: Iterable[tuple[str, SplitManifest]] = ()) -> list[Twin]:
    """Every validation/test image of ``target`` whose pixel twin (another id) is in ``target``'s training
    split, or trained (train) or selected (val) a run of ``sources`` (``(where, manifest)``, the
    ``--init-from`` chain as for check_no_leak); manifests of another dataset are skipped."""
    twins = twin_map(dataset)
    if not twins:
        return []
    uses = [("train", source_ids(target.splits.get("train", ())))]
    for where, manifest in sources:
        if manifest.dataset_sha256 and target.dataset_sha256 and manifest.dataset_sha256 != target.dataset_sha256:
            continue  # another dataset: its ids do not name these images
        name = Path(where).name  # the run's folder name
        uses += [(f"{split} of --init-from {name}", source_ids(manifest.splits.get(split, ())))
                 for split in ("train", "val")]
    found = []
    for split in HELD_OUT:
        for held in sorted(source_ids(target.splits.get(split, ())), key=_id_sort_key):
            for twin in twins.get(held, ()):
                found += [Twin(held, class_of(dataset, held), split, twin, class_of(dataset, twin), use)
                          for use, ids in uses if twin in ids]
    return found


def twin_note(twins: list[Twin]) -> str | None:
    """The one line a run prints at start when it has twins (None when it has none)."""
    if not twins:
        return None
    n = len({(t.held, t.split) for t in twins})
    shown = "; ".join(t.describe() for t in twins[:SHOWN])
    more = f"; and {len(twins) - SHOWN} more (config.json pixel_twins)" if len(twins) > SHOWN else ""
    verb = "image has" if n == 1 else "images have"
    return f"note: {n} validation/test {verb} a pixel-identical twin in training data: {shown}{more}"


def duplicate_report(dataset, seeds: Iterable[int] = REPORT_SEEDS) -> str:
    """The dataset's pixel-twin groups with their classes, and which of them cross a held-out boundary: inside
    the hotspot split of each seed (fixed and study No-Anomaly pools), inside the shared 12-class pretraining
    (``leave_out="hotspot-any-seed"``, seed 0), from that pretraining into each seed's hotspot split and its
    cross-validation folds, and from each seed's own 12-class pretraining (``leave_out="hotspot"``)."""
    from hotspot_jax.data.cv import make_fold_split
    from hotspot_jax.data.protocol import ProtocolConfig, make_binary_split
    from hotspot_jax.data.tasks import get_task, make_split

    groups = pixel_groups(dataset)
    lines = [f"{len(groups)} group(s) of pixel-identical images under different ids "
             f"({sum(len(g) for g in groups)} images):"]
    lines += ["  " + " = ".join(f"{i} ({class_of(dataset, i)})" for i in g) for g in groups]
    if not groups or dataset.own:
        return "\n".join(lines)

    def crossings(title: str, twins: list[Twin]) -> None:
        lines.append(f"{title}: " + ("none" if not twins else "; ".join(t.describe() for t in twins)))

    lines.append("validation/test images whose twin trained or selected the run:")
    for pools in ("fixed", "study"):
        for seed in seeds:
            split = make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools=pools))
            crossings(f"  hotspot split, seed {seed}, {pools} pools, within the split", training_twins(dataset, split))
    shared = make_split(get_task("classes12"), dataset, 0, "hotspot-any-seed", "fixed")
    crossings("  shared 12-class pretraining (hotspot-any-seed, seed 0), within its own split",
              training_twins(dataset, shared))
    for seed in seeds:
        split = make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools="fixed"))
        crossings(f"  hotspot seed {seed} (fixed pools) started from the shared pretraining",
                  training_twins(dataset, split, [("shared-pretraining", shared)]))
        folds = [f"fold {k}: {t.describe()}" for k in range(1, CV_FOLDS + 1) for t in training_twins(
            dataset, make_fold_split(dataset, split, f"{k}/{CV_FOLDS}"), [("shared-pretraining", shared)])]
        lines.append(f"    its {CV_FOLDS} cross-validation folds from the shared pretraining: "
                     + ("; ".join(folds) or "none"))
    for seed in seeds:
        split = make_binary_split(dataset, ProtocolConfig(seed=seed))
        own = make_split(get_task("classes12"), dataset, seed, "hotspot", "study")
        crossings(f"  hotspot seed {seed} (study pools) started from its own 12-class pretraining (leave-out hotspot)",
                  training_twins(dataset, split, [(f"classes12-s{seed}-leave-out-hotspot", own)]))
    return "\n".join(lines)
