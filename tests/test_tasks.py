"""Tasks (hotspot, anomaly, classes12): their seeded stratified splits, ``--leave-out hotspot``, the
no-leak invariant of ``--init-from``, the many-class metrics, and one training loop for every task
(in-domain pretraining = a classes12 run, then a hotspot run started from it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hotspot_jax.data import CLASS_NAMES, ProtocolConfig, SplitManifest, make_binary_split, materialize
from hotspot_jax.data.tasks import (
    HELD_OUT,
    RARE_TRAIN_IMAGES,
    check_no_leak,
    get_task,
    held_out_ids,
    make_split,
    positive_scores,
)
from hotspot_jax.errors import ConfigError, DataError
from test_reproduce_levers import fake_dataset
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

SIZES = {"Hot-Spot": 40, "Hot-Spot-Multi": 40, "No-Anomaly": 600, "Cell": 600, "Soiling": 60, "Diode": 330}


@pytest.fixture(scope="module")
def dataset():
    return fake_dataset(SIZES)


def test_task_names_and_errors():
    assert get_task(None).name == "hotspot" and get_task("classes12").num_classes == 12
    assert get_task("anomaly").class_names == ("No-Anomaly", "Anomaly") and get_task("anomaly").binary
    with pytest.raises(ConfigError, match="unknown --task 'defects'"):
        get_task("defects")


def test_classes12_split_is_stratified_seeded_and_augments_rare_classes(dataset):
    m = make_split(get_task("classes12"), dataset, seed=3)
    assert m.task == "multiclass" and m.class_names == CLASS_NAMES
    for name, n in SIZES.items():  # 70/15/15 within every class, rounding half up
        assert (m.counts["train"][name], m.counts["val"][name], m.counts["test"][name]) == (
            n - 2 * int(0.15 * n + 0.5), int(0.15 * n + 0.5), int(0.15 * n + 0.5))
    rare = [c for c in SIZES if m.counts["train"][c] < RARE_TRAIN_IMAGES]
    assert sorted(m.config.augment_classes) == sorted(rare) and "Cell" not in rare
    for c in SIZES:
        assert m.counts["train_augmented"][c] == m.counts["train"][c] * (4 if c in rare else 1)
    assert make_split(get_task("classes12"), dataset, seed=3).to_dict() == m.to_dict()
    assert make_split(get_task("classes12"), dataset, seed=4).splits["test"] != m.splits["test"]
    arrays = materialize(dataset, m)
    assert arrays["train"].class_names == CLASS_NAMES and len(arrays["train"]) == sum(m.counts["train_augmented"].values())
    back = SplitManifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.to_dict() == m.to_dict()


def test_anomaly_split_has_binary_labels_over_every_class(dataset):
    m = make_split(get_task("anomaly"), dataset, seed=0)
    assert m.task == "anomaly" and m.config.augment_classes == ()
    arrays = materialize(dataset, m)
    for name in ("train", "val", "test"):
        classes = dataset.labels[dataset.indices(arrays[name].ids)]
        assert np.array_equal(arrays[name].labels, (classes != CLASS_NAMES.index("No-Anomaly")).astype(np.int32))
    assert m.counts["test"] == {"No-Anomaly": 90, "Anomaly": 6 + 6 + 90 + 9 + 50}


def test_leave_out_hotspot_never_holds_a_held_out_image_of_that_seed(dataset):
    for seed in (0, 1):
        held = held_out_ids(dataset, seed)
        binary = make_binary_split(dataset, ProtocolConfig(seed=seed))
        assert held == set().union(*(binary.splits[s] for s in HELD_OUT))
        for task in ("classes12", "anomaly"):
            m = make_split(get_task(task), dataset, seed, leave_out="hotspot")
            used = set().union(*m.splits.values())
            assert used and not used & held
            assert used | held == set(dataset.ids.tolist())  # everything else is used
            assert m.splits["test"] == () and m.left_out.startswith(f"hotspot split of seed {seed}")
            check_no_leak([("source", m)], binary)  # does not raise
    with pytest.raises(ConfigError, match="--leave-out applies"):
        make_split(get_task("hotspot"), dataset, 0, leave_out="hotspot")


def test_check_no_leak_catches_a_validation_or_test_image_and_augmented_copies(dataset):
    target = make_binary_split(dataset, ProtocolConfig(seed=0))
    plain = make_split(get_task("classes12"), dataset, 0)  # a split that ignores the hotspot split
    with pytest.raises(DataError, match="validation or test images of this run.*--leave-out hotspot"):
        check_no_leak([("runs/c12", plain)], target)
    # one augmented copy of a test image in a source's training split is a leak too
    leaky = make_split(get_task("classes12"), dataset, 0, leave_out="hotspot")
    leaky = SplitManifest(task=leaky.task, config=leaky.config, counts=leaky.counts, class_names=leaky.class_names,
                          splits={**leaky.splits, "train": leaky.splits["train"] + (target.splits["test"][0] + "@rot180",)},
                          dataset_sha256=leaky.dataset_sha256)
    with pytest.raises(DataError, match="1 image"):
        check_no_leak([("ok", make_split(get_task("anomaly"), dataset, 0, leave_out="hotspot")), ("runs/x", leaky)], target)


def test_a_confusion_png_of_a_thousand_classes_is_a_fixed_size_shading(tmp_path):
    """A formula-driven run's 1,000 classes once asked matplotlib for a 60,000-pixel-square image (27 GB): above
    MAX_NAMED_CLASSES the matrix is drawn as shading alone at 8 x 8 inches; the CSV keeps every prediction."""
    from PIL import Image

    from hotspot_jax.evaluate.multiclass import MAX_NAMED_CLASSES, write_multiclass_evaluation

    k = 1000
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, 3000)
    probs = rng.random((3000, k)).astype(np.float32)
    write_multiclass_evaluation(tmp_path, "test", y, probs, np.arange(3000).astype(str), [f"c{i}" for i in range(k)])
    with Image.open(tmp_path / "test_confusion.png") as im:
        assert max(im.size) <= 8 * 110 + 1
    assert len((tmp_path / "test_predictions.csv").read_text().splitlines()) == 3001
    names = [f"c{i}" for i in range(MAX_NAMED_CLASSES)]  # up to the limit: names and counts, as before
    write_multiclass_evaluation(tmp_path, "small", np.arange(MAX_NAMED_CLASSES), np.eye(MAX_NAMED_CLASSES), names, names)
    with Image.open(tmp_path / "small_confusion.png") as im:
        assert max(im.size) > 8 * 110 + 1


def test_multiclass_metrics_and_hotspot_vs_rest():
    from hotspot_jax.evaluate.multiclass import hotspot_vs_rest, multiclass_metrics

    names = ("A", "Hot-Spot", "Hot-Spot-Multi")
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.9, .05, .05], [.2, .7, .1], [.1, .8, .1], [.1, .3, .6], [.1, .2, .7], [.6, .2, .2]])
    m = multiclass_metrics(y, probs, names)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["per_class"]["A"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["macro_f1"] == pytest.approx(0.5)
    vs = hotspot_vs_rest(y, probs, names)  # hotspot score: columns 1 + 2
    assert (vs["tp"], vs["fn"], vs["fp"], vs["tn"]) == (3, 1, 1, 1)
    task = get_task("classes12")
    p12 = np.full((1, 12), 1 / 12)
    assert positive_scores(task, p12)[0] == pytest.approx(2 / 12)


# ------------------------------------------------------------------------ one loop for every task
@pytest.mark.slow
def test_classes12_run_then_hotspot_run_init_from_it(tmp_path, fast_compile):
    """A classes12 run with --leave-out hotspot trains through the ordinary loop and writes per-class metrics
    and a confusion PNG; a hotspot run --init-from it keeps its BatchNorm statistics and every layer but the
    head; a classes12 run without --leave-out is refused as a source (leak) before any training."""
    from test_train_tiny import TINY

    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train
    from hotspot_jax.train.restore import load_trained

    data = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 200, "Cell": 40, "Diode": 30}, seed=2)
    common = dict(arch=TINY, image_size=16, batch_size=16, lr=0.01, seed=0, eval_batch_size=64)
    quiet = dict(progress=False, log=lambda m: None, dataset=data)
    train(TrainConfig(**common, epochs=1, task="classes12", workdir=str(tmp_path / "pre")), **quiet)
    tm = json.loads((tmp_path / "pre" / "test_metrics.json").read_text())
    assert tm["task"] == "classes12" and set(tm["test"]["per_class"]) == set(CLASS_NAMES)
    assert (tmp_path / "pre" / "evaluation" / "test_confusion.png").stat().st_size > 0
    assert "hotspot_vs_rest" in tm["test"] and len(tm["test"]["confusion_matrix"]) == 12
    # this source saw the hotspot split's test images: refused before any training step
    with pytest.raises(DataError, match="--init-from"):
        train(TrainConfig(**common, epochs=1, init_from=str(tmp_path / "pre"), workdir=str(tmp_path / "leak")), **quiet)
    assert not (tmp_path / "leak" / "config.json").exists()

    train(TrainConfig(**common, epochs=1, task="classes12", leave_out="hotspot", workdir=str(tmp_path / "pool")), **quiet)
    source = load_trained(tmp_path / "pool")
    assert source.task.name == "classes12" and source.variables["params"]["fc"]["kernel"].shape[-1] == 12
    assert json.loads((tmp_path / "pool" / "test_metrics.json").read_text())["val"]["n"] > 0  # no test split

    cfg = TrainConfig(**common, epochs=1, init_from=str(tmp_path / "pool"), workdir=str(tmp_path / "hot"))
    result = train(cfg, **quiet)
    config = json.loads((tmp_path / "hot" / "config.json").read_text())
    assert config["initialisation"].startswith("in-domain: classes12 run pool (")
    assert config["run"]["init_from_checkpoint"].endswith(str(source.checkpoint.relative_to(tmp_path)))
    assert result.test_metrics["test"]["n"] > 0 and "operating_point" in result.test_metrics
    # step 0 of that run: the source's weights and BatchNorm statistics, a fresh 2-class head
    from hotspot_jax.train.loop import init_from_run
    from hotspot_jax.train.restore import build_model
    import jax

    resolved = cfg.resolve()
    start = init_from_run(resolved, build_model({"run": resolved.to_dict()}), jax.random.PRNGKey(0), 2)
    np.testing.assert_array_equal(start["params"]["conv1"]["kernel"], source.variables["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(start["batch_stats"]["bn1"]["mean"], source.variables["batch_stats"]["bn1"]["mean"])
    assert start["params"]["fc"]["kernel"].shape[-1] == 2


def test_init_from_errors(tmp_path):
    from test_train_tiny import TINY

    from hotspot_jax.train.config import TrainConfig

    with pytest.raises(ConfigError, match="--init-from .* does not exist"):
        TrainConfig(arch=TINY, init_from=str(tmp_path / "nope")).resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="--init-from: .* neither a training work directory"):
        TrainConfig(arch=TINY, init_from=str(tmp_path / "empty")).resolve()
    with pytest.raises(ConfigError, match="--leave-out hotspot is for an anomaly or classes12 run"):
        TrainConfig(arch=TINY, leave_out="hotspot").resolve()
