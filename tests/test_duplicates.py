"""Pixel twins (hotspot_jax.data.duplicates): groups of identical images under different ids; a validation or
test image whose twin trained the run or a run of its --init-from chain is named in one note line and in
config.json, not refused; an id-level leak is still refused; an augmented copy is never a twin of its source."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hotspot_jax.data import CLASS_NAMES, ModuleImages, ProtocolConfig, make_binary_split
from hotspot_jax.data.duplicates import duplicate_report, pixel_groups, training_twins, twin_map, twin_note
from hotspot_jax.data.tasks import check_no_leak, get_task, make_split
from hotspot_jax.errors import DataError
from test_reproduce_levers import fake_dataset
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

SIZES = {"Hot-Spot": 20, "No-Anomaly": 300, "Offline-Module": 60, "Shadowing": 60}


def with_copies(dataset: ModuleImages, pairs) -> ModuleImages:
    """``dataset`` with the image of ``src`` copied onto ``dst`` for each ``(src, dst)`` (ids and labels kept)."""
    images = dataset.images.copy()
    for src, dst in pairs:
        images[dataset.indices([dst])[0]] = images[dataset.indices([src])[0]]
    return ModuleImages(images=images, labels=dataset.labels, ids=dataset.ids, metadata_sha256=dataset.metadata_sha256)


def first_of(dataset, manifest, split, cls) -> str:
    return next(i for i in manifest.splits[split] if CLASS_NAMES[dataset.labels[dataset.indices([i])[0]]] == cls)


@pytest.fixture(scope="module")
def plain():
    return fake_dataset(SIZES, seed=5)


def test_groups_are_exact_pixel_matches_sorted_and_cached(plain):
    assert pixel_groups(plain) == () and twin_map(plain) == {}  # random images: no twins
    data = with_copies(plain, [("7", "3"), ("7", "120"), ("50", "11")])
    groups = pixel_groups(data)
    assert groups == (("3", "7", "120"), ("11", "50"))  # ids in numeric order, groups by first id
    assert pixel_groups(data) is groups  # computed once per dataset
    assert twin_map(data)["7"] == ("3", "120") and "8" not in twin_map(data)
    near = plain.images.copy()  # one grey level apart is not a twin
    near[3] = near[7]
    near[3, 0, 0, 0] ^= 1
    assert pixel_groups(ModuleImages(near, plain.labels, plain.ids, plain.metadata_sha256)) == ()


def test_twin_across_train_and_val_of_one_split_is_reported(plain):
    split = make_binary_split(plain, ProtocolConfig(seed=0))
    val, train = first_of(plain, split, "val", "Hot-Spot"), first_of(plain, split, "train", "No-Anomaly")
    data = with_copies(plain, [(val, train)])
    assert make_binary_split(data, ProtocolConfig(seed=0)) == split  # splits do not depend on pixels
    twins = training_twins(data, split)
    assert [(t.held, t.split, t.twin, t.use) for t in twins] == [(val, "val", train, "train")]
    assert twins[0].held_class == "Hot-Spot" and twins[0].twin_class == "No-Anomaly"
    assert twin_note(twins) == (f"note: 1 validation/test image has a pixel-identical twin in training data: "
                                f"{val} (Hot-Spot, val) = {train} (No-Anomaly, train)")
    # a twin pair inside the held-out splits only (val and test) trains nothing: not reported
    test = first_of(plain, split, "test", "Hot-Spot")
    assert training_twins(with_copies(plain, [(val, test)]), split) == []
    assert twin_note([]) is None


def test_twin_in_an_init_from_source_is_reported_and_an_id_leak_still_refused(plain):
    """The issue's case: a hotspot validation image whose twin (another class, another id) trained the
    shared 12-class pretraining; the id-level check passes, the content check names it."""
    shared = make_split(get_task("classes12"), plain, 0, leave_out="hotspot-any-seed", pools="fixed")
    target = make_binary_split(plain, ProtocolConfig(seed=0, no_anomaly_pools="fixed"))
    held, pre = first_of(plain, target, "val", "Hot-Spot"), first_of(plain, shared, "train", "Offline-Module")
    data = with_copies(plain, [(pre, held)])
    check_no_leak([("runs/pre/shared", shared)], target)  # ids: no leak
    twins = training_twins(data, target, [("runs/pre/shared", shared)])
    assert [t.describe() for t in twins] == [
        f"{held} (Hot-Spot, val) = {pre} (Offline-Module, train of --init-from shared)"]
    selected = first_of(plain, shared, "val", "Offline-Module")  # a twin of its validation images selected it
    twins = training_twins(with_copies(plain, [(selected, held)]), target, [("runs/pre/shared", shared)])
    assert [t.use for t in twins] == ["val of --init-from shared"]
    other = dataclasses.replace(shared, dataset_sha256="f" * 64)  # another dataset's ids name other images
    assert training_twins(data, target, [("x", other)]) == []
    leaky = dataclasses.replace(shared, splits={**shared.splits, "train": shared.splits["train"] + (held,)})
    with pytest.raises(DataError, match="--init-from"):
        check_no_leak([("runs/leaky", leaky)], target)


def test_augmented_copies_are_not_twins_of_their_source(plain):
    """A training split names augmented copies ``<id>@<op>``: never a pixel twin of ``<id>`` itself (that is
    an id-level matter for check_no_leak); a copy of a twin counts as the twin."""
    split = make_binary_split(plain, ProtocolConfig(seed=0))
    val, other = first_of(plain, split, "val", "Hot-Spot"), first_of(plain, split, "test", "No-Anomaly")
    own_copy = dataclasses.replace(split, splits={**split.splits, "train": split.splits["train"] + (f"{val}@rot180",)})
    assert training_twins(plain, own_copy) == []
    data = with_copies(plain, [(val, other)])
    twin_copy = dataclasses.replace(split, splits={**split.splits, "train": split.splits["train"] + (f"{other}@gauss",)})
    assert [(t.held, t.split, t.twin, t.use) for t in training_twins(data, twin_copy)] == [(val, "val", other, "train")]


def test_report_names_groups_and_crossings(plain):
    shared = make_split(get_task("classes12"), plain, 0, leave_out="hotspot-any-seed", pools="fixed")
    target = make_binary_split(plain, ProtocolConfig(seed=1, no_anomaly_pools="fixed"))
    held, pre = first_of(plain, target, "test", "Hot-Spot"), first_of(plain, shared, "train", "Shadowing")
    report = duplicate_report(with_copies(plain, [(pre, held)]), seeds=(0, 1))
    pair = sorted([held, pre], key=int)
    assert report.splitlines()[0] == "1 group(s) of pixel-identical images under different ids (2 images):"
    assert " = ".join(f"{i} ({'Hot-Spot' if i == held else 'Shadowing'})" for i in pair) in report
    assert (f"hotspot seed 1 (fixed pools) started from the shared pretraining: {held} (Hot-Spot, test) = {pre} "
            "(Shadowing, train of --init-from shared-pretraining)") in report
    assert "hotspot split, seed 1, fixed pools, within the split: none" in report
    assert duplicate_report(plain).splitlines() == ["0 group(s) of pixel-identical images under different ids (0 images):"]


def test_train_notes_a_twin_and_records_it_in_config(tmp_path, fast_compile):
    """A run whose validation image has a twin in its training split: one note line at start, the twin in
    config.json (and manifest.json unchanged); a run without twins: no note, an empty record."""
    from test_train_tiny import TINY

    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train

    small = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 200}, seed=3)
    split = make_binary_split(small, ProtocolConfig(seed=0))
    val, train_id = first_of(small, split, "val", "Hot-Spot"), first_of(small, split, "train", "No-Anomaly")
    common = dict(arch=TINY, image_size=16, batch_size=16, lr=0.01, seed=0, eval_batch_size=64, epochs=1)
    runs = {}
    for name, data in (("twin", with_copies(small, [(train_id, val)])), ("clean", small)):
        lines: list[str] = []
        train(TrainConfig(**common, workdir=str(tmp_path / name)), progress=False, log=lines.append, dataset=data)
        runs[name] = (lines, json.loads((tmp_path / name / "config.json").read_text()),
                      json.loads((tmp_path / name / "manifest.json").read_text()))
    lines, config, manifest = runs["twin"]
    notes = [line for line in lines if line.startswith("note:")]
    assert notes == [f"note: 1 validation/test image has a pixel-identical twin in training data: "
                     f"{val} (Hot-Spot, val) = {train_id} (No-Anomaly, train)"]
    assert config["pixel_twins"] == [{"held": val, "held_class": "Hot-Spot", "split": "val", "twin": train_id,
                                      "twin_class": "No-Anomaly", "use": "train"}]
    assert manifest == split.to_dict() == runs["clean"][2]  # the split and its manifest stay as they were
    lines, config, _ = runs["clean"]
    assert not [line for line in lines if line.startswith("note:")] and config["pixel_twins"] == []
    # reproduce.py's committed per-run summary carries the record (when there is one)
    from hotspot_jax.reproduce.recipes import get_recipe
    from hotspot_jax.reproduce.runner import summarize_run

    study = get_recipe("paper")
    assert summarize_run(tmp_path / "twin", study, TINY, 0)["pixel_twins"] == runs["twin"][1]["pixel_twins"]
    assert "pixel_twins" not in summarize_run(tmp_path / "clean", study, TINY, 0)


def test_prepare_data_duplicates_lists_a_planted_pair(tmp_path, capsys):
    """scripts/prepare_data.py --duplicates on a synthetic release whose Hot-Spot 5 and Offline-Module 25 are
    the same JPEG: the group, with classes, and the crossings section for each seed asked for."""
    from fixtures_data import jpeg_bytes, make_synthetic_release, synthetic_image
    from test_data_script import _load_script

    from hotspot_jax.cli import run_cli

    same = jpeg_bytes(synthetic_image(np.random.default_rng(9), 5))
    zip_path = make_synthetic_release(tmp_path, {"Hot-Spot": 20, "No-Anomaly": 300, "Offline-Module": 20},
                                      extra_members={"images/5.jpg": same, "images/325.jpg": same})
    argv = ["--data", str(zip_path), "--quiet", "--cache-dir", str(tmp_path / "c"), "--duplicates",
            "--duplicate-seeds", "0", "2"]
    assert run_cli(_load_script().main, argv) == 0
    out = capsys.readouterr().out
    assert "1 group(s) of pixel-identical images under different ids (2 images):\n  5 (Hot-Spot) = 325 (Offline-Module)\n" in out
    for seed in (0, 2):
        assert f"hotspot split, seed {seed}, fixed pools, within the split: none" in out
        assert f"hotspot seed {seed} (fixed pools) started from the shared pretraining: " in out
    assert "seed 1" not in out and "train_augmented" not in out  # the report replaces the split summary


def test_real_dataset_twins_and_where_they_cross(real_dataset):
    """The measured facts docs/data.md states: 22 pairs; the only one in the hotspot task's classes is
    Hot-Spot 6888 = Offline-Module 483, so no hotspot split (seeds 0-4, either pool layout) has a twin across
    its own splits; from the shared 12-class pretraining (483 in its training split) the twin reaches the
    validation split of seed 0 only (a training image of seeds 1-4)."""
    from hotspot_jax.data.duplicates import class_of

    groups = pixel_groups(real_dataset)
    assert len(groups) == 22 and {len(g) for g in groups} == {2}
    hotspot_classes = {"Hot-Spot", "Hot-Spot-Multi", "No-Anomaly"}
    touching = [g for g in groups if {class_of(real_dataset, i) for i in g} & hotspot_classes]
    assert touching == [("483", "6888")] and class_of(real_dataset, "6888") == "Hot-Spot"
    shared = make_split(get_task("classes12"), real_dataset, 0, leave_out="hotspot-any-seed", pools="fixed")
    assert "483" in shared.splits["train"]
    for seed in range(5):
        for pools in ("study", "fixed"):
            assert training_twins(real_dataset, make_binary_split(real_dataset, ProtocolConfig(seed, no_anomaly_pools=pools))) == []
        target = make_binary_split(real_dataset, ProtocolConfig(seed, no_anomaly_pools="fixed"))
        found = [t.describe() for t in training_twins(real_dataset, target, [("runs/shared", shared)])]
        assert found == (["6888 (Hot-Spot, val) = 483 (Offline-Module, train of --init-from shared)"] if seed == 0 else [])
