"""Knowledge distillation (``--distill-from``, hotspot_jax.train.distill): the loss by hand, off and weight 0 leave
the step as it was, the teachers' targets (tempered mean over teachers, on the training images only) saved once and
reused exactly by a resumed run, the no-leak and same-task refusals, and the recipe's teacher resolution."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers the tiny_cnn_test architecture)
from interrupt_fakes import interrupt_after_reads
from test_ema import _dataset, _rows
from test_train_tiny import fast_compile  # noqa: F401  (fixture)
from xla_fast_compile import optimizations_off
from hotspot_jax.cli import run_cli
from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.reproduce.recipes import RECIPES, with_overrides
from hotspot_jax.train import step as steps
from hotspot_jax.train.config import TrainConfig, identity_differences
from hotspot_jax.train.distill import TARGETS_FILE, read_targets
from hotspot_jax.train.optimizer import sgd_momentum
from hotspot_jax.train.restore import build_model
from hotspot_jax.train.state import create_state, init_variables

DEVICES = jax.local_devices()[:1]
T = 2.0


# ------------------------------------------------------------------------------------------------ the loss
def test_distillation_loss_is_tempered_kl_and_its_gradient_pulls_towards_the_teacher():
    logits = jnp.array([[2.0, -1.0], [0.3, 0.1]])
    teacher = jnp.array([[0.2, 0.8], [0.6, 0.4]])
    q = jax.nn.softmax(logits / T, -1)
    by_hand = T**2 * np.sum(np.asarray(teacher) * (np.log(teacher) - np.log(q)), -1)
    np.testing.assert_allclose(steps.distillation_loss(logits, teacher, T), by_hand, rtol=1e-5)
    # zero where the student's tempered softmax is the teacher's, and the gradient is T * (q - p): towards p
    np.testing.assert_allclose(steps.distillation_loss(logits, q, T), 0.0, atol=1e-6)
    grad = jax.grad(lambda z: jnp.sum(steps.distillation_loss(z, teacher, T)))(logits)
    np.testing.assert_allclose(grad, T * (q - teacher), rtol=1e-5, atol=1e-6)
    z = logits
    for _ in range(200):  # descending the loss makes the student's tempered softmax the teacher's
        z = z - 0.5 * jax.grad(lambda z: jnp.sum(steps.distillation_loss(z, teacher, T)))(z)
    np.testing.assert_allclose(jax.nn.softmax(z / T, -1), teacher, atol=1e-3)
    # a zero teacher probability contributes nothing (no 0 * log 0 = nan)
    assert np.isfinite(steps.distillation_loss(logits, jnp.array([[0.0, 1.0], [1.0, 0.0]]), T)).all()


def _batch(seed, k=2):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (1, 8, 40, 24, 1), dtype=np.uint8)
    labels = rng.integers(0, k, (1, 8)).astype(np.int32)
    teacher = rng.dirichlet(np.ones(k), (1, 8)).astype(np.float32)
    return images, labels, teacher


def test_off_and_weight_zero_leave_the_step_unchanged_weight_one_follows_the_teacher(fast_compile):
    from hotspot_jax.train.loop import replicate, unreplicate

    assert TrainConfig(arch="tiny_cnn_test").resolve().distill_weight is None  # off by default
    model = build_model({"run": {"arch": "tiny_cnn_test"}}, bn_axis_name=steps.AXIS)
    tx = sgd_momentum(0.1, 0.9)
    state = create_state(init_variables(model, jax.random.PRNGKey(0), 16), tx)
    key = jax.random.PRNGKey(1)
    plain = steps.make_train_step(model, tx, 16, DEVICES)
    zero = steps.make_train_step(model, tx, 16, DEVICES, distill_weight=0.0, distill_temperature=T)
    one = steps.make_train_step(model, tx, 16, DEVICES, distill_weight=1.0, distill_temperature=T)
    a, b, c = (replicate(state, DEVICES) for _ in range(3))
    images, labels, teacher = _batch(0)
    a, ma = plain(a, images, labels, key)
    b, mb = zero(b, images, labels, teacher, key)
    c, mc = one(c, images, labels, teacher, key)
    for x, y in zip(jax.tree.leaves(unreplicate(a)), jax.tree.leaves(unreplicate(b))):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert float(ma["loss"][0]) == pytest.approx(float(mb["loss"][0]), rel=1e-6)
    assert float(mc["loss"][0]) == pytest.approx(float(ma["loss"][0]), rel=1e-6)  # "loss" stays the hard loss
    assert float(mc["total_loss"][0]) != pytest.approx(float(ma["total_loss"][0]), rel=1e-3)
    # weight 1 descends the distillation loss: repeated steps on one batch bring the student to the teacher
    single = build_model({"run": {"arch": "tiny_cnn_test"}})

    def kl(rep):
        h = unreplicate(rep)
        logits, _ = single.apply({"params": h["params"], "batch_stats": h["batch_stats"]},  # as the step sees it
                                 steps._preprocess(images[0], 16), train=True, mutable=["batch_stats"],
                                 rngs={"dropout": key})
        return float(jnp.mean(steps.distillation_loss(logits, teacher[0], T)))

    teacher = (0.8 * jax.nn.one_hot(1 - labels, 2) + 0.1).astype(np.float32)  # a teacher against the labels
    before = kl(replicate(state, DEVICES))
    for _ in range(15):
        a, ma = plain(a, images, labels, key)
        c, mc = one(c, images, labels, teacher, key)
    assert kl(c) < 0.8 * before and kl(c) < 0.5 * kl(a)  # measured 1.27 -> 0.91; the labels alone: 2.21
    assert float(mc["accuracy"][0]) < 0.5 < float(ma["accuracy"][0])  # it follows the teacher, not the labels
    mixed = steps.make_train_step(model, tx, 16, DEVICES, mixup_alpha=0.4, distill_weight=0.5, distill_temperature=T)
    _, mm = mixed(replicate(state, DEVICES), images, labels, teacher, key)  # mixup mixes the targets too
    assert np.isfinite(float(mm["total_loss"][0]))


def test_mixup_mixes_the_teachers_targets_with_its_own_lam_and_permutation(fast_compile):
    """With mixup, the distillation term of the step is T^2 KL to ``lam * p + (1 - lam) * p[perm]``, the very draw
    that mixed the images (weight 1: the objective is that term alone), not to the unmixed targets."""
    model = build_model({"run": {"arch": "tiny_cnn_test"}}, bn_axis_name=steps.AXIS)
    single = build_model({"run": {"arch": "tiny_cnn_test"}})
    tx = sgd_momentum(0.1, 0.9)
    state = create_state(init_variables(model, jax.random.PRNGKey(0), 16), tx)
    images, labels, teacher = _batch(0)
    key = jax.random.PRNGKey(1)
    step = steps.make_train_step(model, tx, 16, DEVICES, mixup_alpha=0.4, distill_weight=1.0, distill_temperature=T)
    from hotspot_jax.train.loop import replicate

    _, metrics = step(replicate(state, DEVICES), images, labels, teacher, key)
    k = jax.random.fold_in(jax.random.fold_in(key, 0), 0)  # (step 0, device 0), as train_step_fn folds it
    x = steps._preprocess(images[0], 16)
    lam, perm = steps.mixup_draw(jax.random.fold_in(k, 2), 0.4, x.shape[0], x.dtype)
    logits, _ = single.apply({"params": state["params"], "batch_stats": state["batch_stats"]},
                             lam * x + (1 - lam) * x[perm], train=True, mutable=["batch_stats"], rngs={"dropout": k})
    mixed = lam * teacher[0] + (1 - lam) * teacher[0][perm]
    assert not np.array_equal(np.asarray(perm), np.arange(8))
    want = float(jnp.mean(steps.distillation_loss(logits, mixed, T)))
    unmixed = float(jnp.mean(steps.distillation_loss(logits, teacher[0], T)))
    assert float(metrics["total_loss"][0]) == pytest.approx(want, rel=1e-5)
    assert unmixed != pytest.approx(want, rel=1e-3)


# ----------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("args, message", [
    (["--distill-weight", "0.3"], "--distill-weight needs teacher runs"),
    (["--distill-from", "{teacher}", "--distill-weight", "1.5"], "--distill-weight must be in [0, 1]"),
    (["--distill-from", "{teacher}", "--distill-temperature", "0"], "--distill-temperature must be a finite number > 0"),
    (["--distill-from", "{missing}"], "--distill-from"),
])
def test_bad_distillation_options_are_one_error_line(capsys, tmp_path, teacher_run, args, message):
    from hotspot_jax.train.cli import main

    _, teacher = teacher_run
    args = [a.format(teacher=teacher, missing=tmp_path / "nope") for a in args]
    code = run_cli(main, ["--arch", "tiny_cnn_test", *args, "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "w").exists()


def test_a_teacher_run_without_a_best_checkpoint_is_refused_not_replaced_by_its_latest(teacher_run, tmp_path):
    """A work directory teaches with its best checkpoint only; restore.resolve_checkpoint's fallback to the latest
    one (an unselected, possibly mid-epoch state) is refused in one line; a checkpoint directory named is used."""
    _, teacher = teacher_run
    nobest = shutil.copytree(teacher, tmp_path / "nobest")
    shutil.rmtree(nobest / "best")
    with pytest.raises(ConfigError, match=r"--distill-from .*nobest: that run has no best checkpoint"):
        TrainConfig(arch="tiny_cnn_test", distill_from=[str(nobest)]).resolve()
    named = TrainConfig(arch="tiny_cnn_test", distill_from=[str(nobest / "checkpoints" / "4")]).resolve()
    assert named.distill_checkpoints == [str((nobest / "checkpoints" / "4").resolve())]


def test_distillation_is_part_of_the_identity():
    base = TrainConfig(arch="tiny_cnn_test").resolve()
    stored = {k: v for k, v in base.to_dict().items() if not k.startswith("distill")}  # a config of before
    assert identity_differences(stored, base) == []
    assert identity_differences(stored, dataclasses.replace(base, distill_weight=0.5)) == [
        "distill_weight: None -> 0.5"]


# ---------------------------------------------------------------------------------- runs, end to end
def _cfg(workdir, **kw):
    return TrainConfig(arch="tiny_cnn_test", epochs=3, batch_size=8, lr=0.05, image_size=16, eval_batch_size=16,
                       limit_train=32, limit_eval=32, workdir=str(workdir), seed=2, keep=3, **kw)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A 2-epoch teacher on the student's split (seed 2) and the dataset."""
    from hotspot_jax.train.loop import train

    with optimizations_off():
        data = _dataset()
        run = tmp_path_factory.mktemp("distill") / "teacher"
        train(dataclasses.replace(_cfg(run), epochs=2, lr=0.1, image_size=20), progress=False, log=lambda m: None,
              dataset=data)
        yield data, run


@pytest.fixture(scope="module")
def student_run(teacher_run, tmp_path_factory):
    """An uninterrupted student of the teacher's best and its first epoch's checkpoints (two teachers)."""
    from hotspot_jax.train.loop import train

    data, teacher = teacher_run
    run = tmp_path_factory.mktemp("distill") / "student"
    teachers = [str(teacher), str(teacher / "checkpoints" / "4")]
    lines: list[str] = []
    train(_cfg(run, distill_from=teachers, distill_temperature=3.0), progress=False, log=lines.append, dataset=data)
    return teachers, run, lines


def test_targets_are_the_mean_tempered_teacher_probabilities_of_the_training_images(teacher_run, student_run):
    from hotspot_jax.train.loop import load_data
    from hotspot_jax.train.restore import load_trained

    data, teacher = teacher_run
    teachers, run, lines = student_run
    assert (run / "test_metrics.json").is_file() and any("wrote" in line and TARGETS_FILE in line for line in lines)
    stored = read_targets(run / TARGETS_FILE)
    cfg = _cfg(run).resolve()
    _, arrays = load_data(cfg, lambda m: None, data, progress=False)
    train = arrays["train"]
    assert stored["train_ids"].tolist() == np.asarray(train.ids).astype(str).tolist()
    assert stored["teacher_steps"].tolist() == [int(load_trained(teacher).checkpoint.name), 4]
    assert float(stored["temperature"]) == 3.0
    want = 0
    for t in teachers:  # softmax(log p / T) = softmax(z / T): from evaluate.py's own predictions
        p = load_trained(t).predict_class_proba(train.images)
        want = want + jax.nn.softmax(np.log(p) / 3.0, -1) / 2
    np.testing.assert_allclose(stored["targets"], want, rtol=1e-4, atol=1e-6)
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["distill_weight"] == 0.5 and config["run"]["distill_temperature"] == 3.0
    assert [t["checkpoint"] for t in config["distillation"]["teachers"]] == config["run"]["distill_checkpoints"]
    # the training history differs from a run without the teachers only by them: the hard loss is still logged
    assert all(r["train_total_loss"] != r["train_loss"] for r in _rows(run))


def test_interrupted_and_resumed_student_equals_the_uninterrupted_one(teacher_run, student_run, tmp_path, monkeypatch):
    from hotspot_jax.train import loop
    from hotspot_jax.train.restore import load_trained

    data, _ = teacher_run
    teachers, run, _ = student_run

    cfg = _cfg(tmp_path / "broken", distill_from=teachers, distill_temperature=3.0)
    monkeypatch.setattr(loop, "InterruptFlag", interrupt_after_reads(7))  # mid-epoch 2
    first = loop.train(cfg, progress=False, log=lambda m: None, dataset=data)
    assert first.interrupted and first.checkpoint == tmp_path / "broken" / "checkpoints" / "6"
    monkeypatch.undo()
    saved = read_targets(tmp_path / "broken" / TARGETS_FILE)["targets"]
    lines: list[str] = []
    loop.train(cfg, progress=False, log=lines.append, dataset=data)
    assert any("read from" in line for line in lines) and not any("teacher 1/2" in line for line in lines), lines
    np.testing.assert_array_equal(read_targets(tmp_path / "broken" / TARGETS_FILE)["targets"], saved)
    assert _rows(run) == _rows(tmp_path / "broken")
    for x, y in zip(jax.tree.leaves(load_trained(run).variables),
                    jax.tree.leaves(load_trained(tmp_path / "broken").variables)):
        np.testing.assert_array_equal(x, y)


def _copy_teacher(teacher, where):
    shutil.copytree(teacher, where)
    return where


def test_a_teacher_that_trained_on_a_held_out_image_or_of_another_task_is_refused(teacher_run, tmp_path):
    from hotspot_jax.train.loop import load_data, train

    data, teacher = teacher_run
    # a teacher of seed 3: its training split holds validation and test images of the seed-2 student
    other_seed = _copy_teacher(teacher, tmp_path / "seed3")
    manifest, _ = load_data(dataclasses.replace(_cfg(other_seed), seed=3).resolve(), lambda m: None, data,
                            progress=False)
    manifest.to_json(other_seed / "manifest.json")
    with pytest.raises(DataError, match=r"--distill-from .*seed3: \d+ image\(s\) that trained that teacher are "
                                        "validation or test images of this run"):
        train(_cfg(tmp_path / "s1", distill_from=[str(other_seed)]), progress=False, log=lambda m: None, dataset=data)
    # a teacher started (--init-from) from that leaking run: its chain is checked as --init-from is
    chained = _copy_teacher(teacher, tmp_path / "chained")
    config = json.loads((chained / "config.json").read_text())
    config["run"]["init_from_checkpoint"] = str(next((other_seed / "best").glob("[0-9]*")))
    (chained / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"--init-from .*seed3 \(the start of --distill-from teacher .*chained\)"):
        train(_cfg(tmp_path / "s2", distill_from=[str(chained)]), progress=False, log=lambda m: None, dataset=data)
    # a teacher of another task
    other_task = _copy_teacher(teacher, tmp_path / "anomaly")
    config = json.loads((other_task / "config.json").read_text())
    config["run"]["task"] = "classes12"
    (other_task / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="a classes12 run with 12 classes cannot teach a hotspot run with 2 classes"):
        train(_cfg(tmp_path / "s3", distill_from=[str(other_task)]), progress=False, log=lambda m: None, dataset=data)
    for name in ("s1", "s2", "s3"):  # refused before anything of the run was written
        assert not (tmp_path / name / "config.json").exists() and not (tmp_path / name / TARGETS_FILE).exists()


def test_a_teacher_whose_validation_split_holds_a_test_image_of_this_run_is_refused(teacher_run, tmp_path):
    """A teacher's validation split chose its checkpoint; a test image of the student there would reach the student
    through the teacher's targets, so it is refused like a training leak (tests/test_distill.py)."""
    from hotspot_jax.train.loop import load_data, train

    data, teacher = teacher_run
    student, _ = load_data(_cfg(tmp_path / "s").resolve(), lambda m: None, data, progress=False)
    moved = _copy_teacher(teacher, tmp_path / "valtest")
    m = json.loads((moved / "manifest.json").read_text())
    m["splits"]["val"] = list(m["splits"]["val"]) + [student.splits["test"][0]]
    m["splits"]["train"] = [i for i in m["splits"]["train"] if i not in set(student.splits["test"])]
    (moved / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"--distill-from .*valtest: 1 image\(s\) that chose that teacher's checkpoint"):
        train(_cfg(tmp_path / "s", distill_from=[str(moved)]), progress=False, log=lambda m: None, dataset=data)
    assert not (tmp_path / "s" / "config.json").exists()


def test_the_teachers_of_a_teacher_and_of_an_init_from_run_are_checked_too(teacher_run, tmp_path):
    """Knowledge of a held-out image reaches a run through any run that shaped its weights: a teacher's own teachers
    are checked as teachers are, and the teachers of an ``--init-from`` source as that source is."""
    from hotspot_jax.data.tasks import check_no_leak
    from hotspot_jax.train.loop import init_from_chain, load_data, train

    data, teacher = teacher_run
    other_seed = _copy_teacher(teacher, tmp_path / "seed3")  # its training split holds the student's held-out images
    manifest, _ = load_data(dataclasses.replace(_cfg(other_seed), seed=3).resolve(), lambda m: None, data,
                            progress=False)
    manifest.to_json(other_seed / "manifest.json")
    taught = _copy_teacher(teacher, tmp_path / "taught")  # the student's split, distilled from the seed-3 run
    config = json.loads((taught / "config.json").read_text())
    config["run"]["distill_checkpoints"] = [str(next((other_seed / "best").glob("[0-9]*")))]
    (taught / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"--distill-from .*seed3 \(a teacher of --distill-from teacher .*taught\): "
                                        r"\d+ image\(s\) that trained that teacher"):
        train(_cfg(tmp_path / "s1", distill_from=[str(taught)]), progress=False, log=lambda m: None, dataset=data)
    assert not (tmp_path / "s1" / "config.json").exists()
    # an --init-from source that trained on the student's training images only, distilled from the seed-3 run
    student, _ = load_data(_cfg(tmp_path / "s2").resolve(), lambda m: None, data, progress=False)
    (taught / "manifest.json").write_text(json.dumps({**json.loads((taught / "manifest.json").read_text()),
                                                      "splits": {"train": list(student.splits["train"])}}))
    chain = init_from_chain(str(next((taught / "best").glob("[0-9]*"))))
    assert [where for where, _ in chain] == [str(taught), f"{other_seed} (a --distill-from teacher of {taught})"]
    check_no_leak(chain[:1], student)  # the source itself is clean
    with pytest.raises(DataError, match=r"--init-from .*seed3 \(a --distill-from teacher of .*taught\): \d+ image"):
        check_no_leak(chain, student)


# ---------------------------------------------------------------------------------------------- recipes
def test_recipe_teachers_resolve_per_seed_and_a_missing_one_is_one_line(tmp_path):
    from hotspot_jax.reproduce.runner import distill_teacher_dirs, run_dir

    best = RECIPES["best-v2"]
    lever = with_overrides(best, ["distill_teachers=best-v2:shufflenet,squeezenet", "distill_weight=0.7"])
    assert lever.name != best.name and "distill_teachers" in lever.name and lever.fingerprint() != best.fingerprint()
    assert dataclasses.replace(best, distill_weight=0.5, distill_temperature=2.0).fingerprint() == best.fingerprint()
    assert distill_teacher_dirs(best, 0, tmp_path) is None
    with pytest.raises(ConfigError, match=r"teacher run\(s\) .*best-v2/squeezenet1_1-s1 are missing or unfinished"):
        for arch in ("shufflenet_v2_x1_0", "squeezenet1_1"):
            run_dir(tmp_path, "best-v2", arch, 1).mkdir(parents=True)
        (run_dir(tmp_path, "best-v2", "shufflenet_v2_x1_0", 1) / "test_metrics.json").write_text("{}")
        distill_teacher_dirs(lever, 1, tmp_path)
    (run_dir(tmp_path, "best-v2", "squeezenet1_1", 1) / "test_metrics.json").write_text("{}")
    dirs = distill_teacher_dirs(lever, 1, tmp_path)
    assert dirs == [str(run_dir(tmp_path, "best-v2", a, 1)) for a in ("shufflenet_v2_x1_0", "squeezenet1_1")]
    cfg = lever.train_config("tiny_cnn_test", 1, str(tmp_path / "w"), distill_from=dirs)
    assert (cfg.distill_from, cfg.distill_weight, cfg.distill_temperature) == (dirs, 0.7, 2.0)
    assert best.train_config("tiny_cnn_test", 1, str(tmp_path / "w")).distill_from is None
    with pytest.raises(ConfigError, match="use <recipe>:<arch>"):
        with_overrides(best, ["distill_teachers=shufflenet"])


def test_train_cli_distils_from_a_teacher_run_and_resumes_from_its_workdir(capsys, tmp_path, monkeypatch, fast_compile):
    """``scripts/train.py --distill-from`` end to end on a synthetic release; ``--resume --workdir`` alone keeps
    the teachers (re-resolved) and reads the saved targets."""
    from fixtures_data import make_synthetic_release
    from hotspot_jax.train.cli import main

    monkeypatch.setenv("HOTSPOT_DATA", str(make_synthetic_release(tmp_path, {"Hot-Spot": 10, "No-Anomaly": 40})))
    common = ["--arch", "tiny_cnn_test", "--batch-size", "8", "--image-size", "16", "--no-progress"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert run_cli(main, [*common, "--epochs", "1", "--workdir", str(teacher)]) == 0
    assert run_cli(main, [*common, "--epochs", "1", "--workdir", str(student), "--distill-from", str(teacher),
                          "--distill-weight", "0.8"]) == 0
    saved = read_targets(student / TARGETS_FILE)
    assert saved is not None and np.allclose(saved["targets"].sum(-1), 1.0, atol=1e-5)
    run = json.loads((student / "config.json").read_text())["run"]
    assert run["distill_weight"] == 0.8 and run["distill_from"] == [str(teacher.resolve())]
    capsys.readouterr()
    assert run_cli(main, ["--resume", "--workdir", str(student), "--epochs", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "read from" in err and "teacher 1/1" not in err, err
    assert len(_rows(student)) == 2


def test_the_grid_gives_each_run_its_seeds_teachers_and_refuses_a_missing_one_before_training(tmp_path):
    from hotspot_jax.reproduce.runner import run_dir, run_grid
    from hotspot_jax.train.loop import RunResult

    lever = with_overrides(RECIPES["best-v2"], ["pretrain_epochs=0", "distill_teachers=best-v2:squeezenet"])
    seen = []

    def fake_train(cfg, **kw):
        seen.append(cfg)
        return RunResult(workdir=cfg.workdir, epochs_done=0, best=None, interrupted=True)

    grid = {"runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results", "dataset": object(),
            "progress": False, "log": lambda m: None, "train_fn": fake_train}
    with pytest.raises(ConfigError, match=r"best-v2/squeezenet1_1-s3 are missing or unfinished"):
        run_grid(lever, ["shufflenet"], [3], **grid)
    assert seen == []
    teacher = run_dir(tmp_path / "runs", "best-v2", "squeezenet1_1", 3)
    teacher.mkdir(parents=True)
    (teacher / "test_metrics.json").write_text("{}")
    assert run_grid(lever, ["shufflenet"], [3], **grid)["interrupted"] == ["shufflenet_v2_x1_0-s3"]
    assert seen[0].distill_from == [str(teacher)] and seen[0].distill_weight == 0.5 and seen[0].seed == 3
