"""scripts/train.py faults: each a one-line ``error:`` message, exit code 2, no traceback; --help lists every option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import test_train_tiny  # noqa: F401  (registers tiny_cnn_test)
from test_train_tiny import fast_compile  # noqa: F401
from hotspot_jax.cli import run_cli
from hotspot_jax.train.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("fast_compile")
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY = ["--arch", "tiny_cnn_test", "--image-size", "16", "--limit-train", "64", "--limit-eval", "32",
        "--batch-size", "8", "--eval-batch-size", "16", "--no-progress"]


def _fails(capsys, argv, *needles):
    code = run_cli(main, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]) and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in out
    for text in ("(default: 40)", "(default: 32)", "(default: 0.001)", "(default: 0.9)", "(default: 0.0001)",
                 "(default: paper)", "(default: 0)", "(default: 3)", "(default: 256)", "none = from scratch",
                 "runs/<arch>-s<seed>-<size>px", "$HOTSPOT_DATA"):
        assert text in out, text


def test_unknown_architecture(capsys, tmp_path):
    _fails(capsys, ["--arch", "lenet", "--workdir", str(tmp_path / "w")], "unknown architecture 'lenet'",
           "squeezenet1_1")


def test_missing_arch_and_bad_numbers(capsys, tmp_path):
    _fails(capsys, ["--workdir", str(tmp_path)], "--arch is required")
    _fails(capsys, [*TINY, "--epochs", "0", "--workdir", str(tmp_path / "w")], "--epochs must be at least 1")
    _fails(capsys, [*TINY, "--image-size", "2", "--workdir", str(tmp_path / "w")], "minimum input size 4")


def test_bad_numbers_without_workdir_are_one_line_too(capsys, tmp_path, monkeypatch):
    """The default work directory (runs/...) is worked out without a traceback, and not left behind."""
    monkeypatch.chdir(tmp_path)
    _fails(capsys, [*TINY, "--epochs", "0"], "--epochs must be at least 1")
    assert not (tmp_path / "runs").exists()


def test_unwritable_workdir(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _fails(capsys, [*TINY, "--workdir", str(blocker / "run")], "work directory", "is not writable")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _fails(capsys, [*TINY, "--workdir", str(locked / "run")], "is not writable")


def test_workdir_of_another_run_is_refused(capsys, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"run": {"arch": "resnet50", "image_size": 224, "seed": 0}}))
    _fails(capsys, [*TINY, "--workdir", str(workdir)], "holds another run's configuration",
           "arch: 'resnet50' -> 'tiny_cnn_test'", "--overwrite")
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _fails(capsys, [*TINY, "--workdir", str(other)], "is not empty", "holds no run")
    _fails(capsys, [*TINY, "--resume", "--workdir", str(tmp_path / "empty")], "no run to resume")


def test_batch_size_not_divisible_by_the_device_count():
    runner = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_train_tiny; "
              "from hotspot_jax.cli import run_cli; from hotspot_jax.train.cli import main; sys.exit(run_cli(main))")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="true")
    proc = subprocess.run([sys.executable, "-c", runner, *TINY, "--batch-size", "9", "--workdir", "/tmp/never"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "error: --batch-size 9 is not divisible by the number of devices (2)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path("/tmp/never").exists()


@pytest.mark.needs_torch
def test_pretrained_file_of_another_architecture(capsys, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from fixtures_data import make_synthetic_release

    # the data is read before the weights (issue 28), so it must be there for the weights' error to show
    monkeypatch.setenv("HOTSPOT_DATA", str(make_synthetic_release(tmp_path, {"Hot-Spot": 10, "No-Anomaly": 40})))
    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "squeezenet1_0.pth"
    torch.save(torchvision.models.squeezenet1_0(weights=None).state_dict(), path)
    err = _fails(capsys, ["--arch", "squeezenet", "--image-size", "32", "--pretrained", str(path),
                          "--workdir", str(tmp_path / "w")])
    assert "squeezenet1_0.pth" in err and "another architecture" in err, err
    _fails(capsys, ["--arch", "squeezenet", "--pretrained", str(tmp_path / "nope.pth"), "--workdir",
                    str(tmp_path / "w2")], "nope.pth does not exist")


@pytest.fixture
def real_data(real_dataset, monkeypatch):
    """main() reads the session's real dataset instead of loading the zip again."""
    monkeypatch.setattr("hotspot_jax.data.load_dataset", lambda *a, **k: real_dataset)
    return real_dataset


@pytest.mark.needs_data
def test_non_finite_loss_stops_with_a_clear_message(capsys, tmp_path, real_data):
    err = _fails(capsys, [*TINY, "--lr", "1e30", "--epochs", "2", "--workdir", str(tmp_path / "w")],
                 "training loss became non-finite", "no checkpoint was saved", "Lower --lr")
    assert not list((tmp_path / "w" / "checkpoints").iterdir())


@pytest.mark.needs_data
def test_non_finite_loss_keeps_the_last_good_checkpoint(capsys, tmp_path, real_data, monkeypatch):
    import jax.numpy as jnp

    from hotspot_jax.train import loop

    workdir = tmp_path / "w"
    assert run_cli(main, [*TINY, "--epochs", "1", "--workdir", str(workdir)]) == 0
    capsys.readouterr()
    real = loop.make_train_step

    def poisoned(*args, **kwargs):  # the third step of epoch 2 returns a NaN loss
        step, calls = real(*args, **kwargs), []

        def wrapped(*a):
            state, m = step(*a)
            calls.append(1)
            return state, (dict(m, loss=m["loss"] * jnp.nan) if len(calls) == 3 else m)

        return wrapped

    monkeypatch.setattr(loop, "make_train_step", poisoned)
    _fails(capsys, [*TINY, "--epochs", "2", "--workdir", str(workdir)], "non-finite (nan) at epoch 2, batch 3",
           f"last good checkpoint is {workdir / 'checkpoints' / '8'}")
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["8"]
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 1
