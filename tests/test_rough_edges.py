"""The rough edges a new user hit (issue 28): a bad --data is found before any weights and leaves no work
directory; config.json records the data path and the dataset's sha256 also when they come from
$HOTSPOT_DATA; the resume message; --workdir naming a file; the advice after a non-finite loss."""

from __future__ import annotations

import json

import pytest

import test_train_tiny  # noqa: F401  (registers tiny_cnn_test)
from fixtures_data import make_synthetic_release, metadata_sha256
from hotspot_jax.cli import run_cli
from hotspot_jax.train.cli import main
from test_train_cli import _fails as fails
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")
TINY = ["--arch", "tiny_cnn_test", "--image-size", "16", "--limit-train", "32", "--limit-eval", "16",
        "--batch-size", "8", "--eval-batch-size", "16", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("rough")
    return make_synthetic_release(root, {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100}, seed=5)


@pytest.fixture()
def data_env(release, monkeypatch, tmp_path):
    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path.parent / "rough_cache"))
    monkeypatch.setenv("HOTSPOT_DATA", str(release))
    return release


def _fails(capsys, argv, *needles) -> str:
    return fails(capsys, [str(a) for a in argv], *needles)


def test_bad_data_is_found_before_the_weights_and_leaves_no_workdir(capsys, tmp_path, monkeypatch):
    from hotspot_jax.train import loop

    def never(*a, **k):
        raise AssertionError("weights were initialised before the data was checked")

    monkeypatch.setattr(loop, "initial_variables", never)
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    workdir = tmp_path / "runs" / "new"
    _fails(capsys, [*TINY, "--data", tmp_path / "missing.zip", "--workdir", workdir], "--data", "missing.zip",
           "does not exist")
    monkeypatch.setenv("HOTSPOT_DATA", str(tmp_path / "gone.zip"))
    _fails(capsys, [*TINY, "--workdir", workdir], "$HOTSPOT_DATA", "gone.zip does not exist")
    not_a_zip = tmp_path / "data.zip"
    not_a_zip.write_text("not a zip")
    _fails(capsys, [*TINY, "--data", not_a_zip, "--workdir", workdir], "data.zip")
    assert not workdir.exists() and not workdir.parent.exists()


def test_a_failure_after_the_workdir_was_made_removes_it(capsys, tmp_path, monkeypatch, data_env):
    from hotspot_jax.errors import ConfigError
    from hotspot_jax.train import loop

    def bad_weights(*a, **k):
        raise ConfigError("--pretrained x.pth: cannot convert it")

    monkeypatch.setattr(loop, "initial_variables", bad_weights)
    workdir = tmp_path / "new"
    _fails(capsys, [*TINY, "--workdir", workdir], "cannot convert it")
    assert not workdir.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    _fails(capsys, [*TINY, "--workdir", existing], "cannot convert it")
    assert existing.is_dir()  # the user's own folder stays


def test_config_records_the_data_from_the_environment(capsys, tmp_path, data_env):
    workdir = tmp_path / "run"
    assert run_cli(main, [*TINY, "--workdir", str(workdir)]) == 0, capsys.readouterr().err
    config = json.loads((workdir / "config.json").read_text())
    assert config["run"]["data"] == str(data_env.resolve())
    assert config["dataset_sha256"] == metadata_sha256(data_env)
    assert json.loads((workdir / "manifest.json").read_text())["dataset_sha256"] == config["dataset_sha256"]


def test_resume_message_says_epochs_done_and_the_next_batch():
    from hotspot_jax.train.loop import resume_position

    assert resume_position({"epochs_done": 1, "batch_in_epoch": 30}, 2, 64) == \
        "1 of 2 epochs done; epoch 2 goes on from batch 31 of 64"
    assert resume_position({"epochs_done": 2, "batch_in_epoch": 0}, 3, 64) == "2 of 3 epochs done"


def test_workdir_that_is_a_file(capsys, tmp_path, data_env):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    _fails(capsys, [*TINY, "--workdir", path], f"--workdir {path} is a file, not a directory")
    assert path.read_text() == "mine"


def test_non_finite_loss_says_how_to_rerun_with_another_lr(capsys, tmp_path, data_env):
    workdir = tmp_path / "w"
    _fails(capsys, [*TINY, "--lr", "1e30", "--workdir", workdir], "non-finite", "Lower --lr",
           "to rerun with another --lr, add --overwrite", "new --workdir")
    _fails(capsys, [*TINY, "--lr", "0.05", "--workdir", workdir], "holds another run's configuration", "--overwrite")
    assert run_cli(main, [*TINY, "--lr", "0.05", "--overwrite", "--workdir", str(workdir)]) == 0
