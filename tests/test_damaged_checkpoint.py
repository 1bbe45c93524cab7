"""A damaged orbax checkpoint (a truncated data file, an emptied metadata file): resuming skips it for the
newest intact one, moves it to ``damaged/`` and ends bit-identical to an uninterrupted run; predict and
evaluate print one error line naming it, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers tiny_cnn_test)
from fixtures_data import make_synthetic_release
from hotspot_jax.cli import run_cli
from hotspot_jax.train.checkpoint import failure_reason
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")
ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100}
TIMING_KEYS = ("train_seconds", "images_per_second")


def _cfg(zpath, workdir):
    from hotspot_jax.train.config import TrainConfig

    return TrainConfig(arch="tiny_cnn_test", data=str(zpath), epochs=3, batch_size=8, lr=0.05, image_size=16,
                       eval_batch_size=16, limit_train=32, limit_eval=32, workdir=str(workdir), seed=2, keep=3)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-epoch run (4 steps an epoch: checkpoints 4, 8, 12) and its data."""
    from hotspot_jax.train.loop import train

    root = tmp_path_factory.mktemp("damaged")
    old = os.environ.get("HOTSPOT_CACHE_DIR")
    os.environ["HOTSPOT_CACHE_DIR"] = str(root / "cache")
    zpath = make_synthetic_release(root, COUNTS, seed=6)
    run = root / "straight"
    jax.config.update("jax_disable_most_optimizations", True)
    train(_cfg(zpath, run), progress=False, log=lambda m: None)
    yield zpath, run
    if old is not None:
        os.environ["HOTSPOT_CACHE_DIR"] = old


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _truncate(item: Path) -> None:
    """Cut a data file of a checkpoint item to half its size (a full disk, a killed copy): the largest in
    ``d/``, the one this tiny model's arrays are read from (they are small enough to sit in its b-tree)."""
    big = max((item / "d").iterdir(), key=lambda p: p.stat().st_size)
    os.truncate(big, big.stat().st_size // 2)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _leaves(path: Path) -> list[np.ndarray]:
    from hotspot_jax.train.restore import load_trained

    return [np.asarray(x) for x in jax.tree.leaves(load_trained(path).variables)]


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _same_run(a: Path, b: Path) -> None:
    assert _rows(a) == _rows(b)
    for x, y in zip(_leaves(a / "checkpoints" / "12"), _leaves(b / "checkpoints" / "12")):
        np.testing.assert_array_equal(x, y)
    assert sorted(p.name for p in (a / "best").iterdir() if p.name.isdigit()) == \
        sorted(p.name for p in (b / "best").iterdir() if p.name.isdigit())
    for x, y in zip(_leaves(a), _leaves(b)):  # the chosen checkpoint
        np.testing.assert_array_equal(x, y)
    ta, tb = (json.loads((r / "test_metrics.json").read_text()) for r in (a, b))
    assert ta["test"] == tb["test"] and ta["test_realistic"] == tb["test_realistic"]


def _resume(zpath, run):
    from hotspot_jax.train.loop import train

    lines: list[str] = []
    train(_cfg(zpath, run), progress=False, log=lines.append)
    return "\n".join(lines)


def test_resume_skips_damaged_checkpoints_and_ends_identical(straight, tmp_path):
    zpath, run = straight
    broken = _copy(run, tmp_path / "broken")
    _truncate(broken / "checkpoints" / "12" / "state")  # the newest: a truncated data file
    _empty(broken / "checkpoints" / "8" / "meta" / "metadata")  # the one before: emptied metadata
    log = _resume(zpath, broken)
    assert "skipped damaged checkpoint" in log and str(broken / "checkpoints" / "12") in log, log
    assert str(broken / "checkpoints" / "8") in log and "resuming from" in log and "checkpoints/4 " in log, log
    # never deleted: both moved aside, named in the log
    assert sorted(p.name for p in (broken / "damaged").iterdir()) == ["checkpoints-12", "checkpoints-8"]
    assert str(broken / "damaged" / "checkpoints-12") in log
    _same_run(run, broken)


def test_damaged_best_is_rebuilt_from_its_epoch_checkpoint(straight, tmp_path):
    zpath, run = straight
    broken = _copy(run, tmp_path / "broken")
    (best,) = [p for p in (broken / "best").iterdir() if p.name.isdigit()]
    _empty(best / "variables" / "_METADATA")
    log = _resume(zpath, broken)  # a finished run: only the final evaluation runs again
    assert f"skipped damaged best checkpoint {best}" in log and f"rebuilt {best}" in log, log
    assert (broken / "damaged" / f"best-{best.name}").is_dir()
    _same_run(run, broken)


def test_every_checkpoint_damaged_starts_again_and_ends_identical(straight, tmp_path):
    zpath, run = straight
    broken = _copy(run, tmp_path / "broken")
    for step in (4, 8, 12):
        _truncate(broken / "checkpoints" / str(step) / "state")
    log = _resume(zpath, broken)
    assert log.count("skipped damaged checkpoint") == 3 and "starts again from its first epoch" in log, log
    _same_run(run, broken)


def test_predict_and_evaluate_name_the_damaged_checkpoint(straight, tmp_path, capsys):
    from hotspot_jax import predict
    from hotspot_jax.evaluate.cli import main as evaluate_main

    zpath, run = straight
    broken = _copy(run, tmp_path / "broken")
    (best,) = [p for p in (broken / "best").iterdir() if p.name.isdigit()]
    _truncate(best / "variables")
    image = tmp_path / "module.png"
    from PIL import Image

    Image.fromarray(np.full((40, 24), 128, np.uint8)).save(image)

    for main, argv in ((evaluate_main, ["--workdir", str(broken), "--data", str(zpath), "--no-progress"]),
                       (predict.main, ["--checkpoint", str(broken), str(image), "--out", str(tmp_path / "p.csv")])):
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: checkpoint {best} cannot be read") and "damaged" in err, err
        assert "rerun the training command" in err and len(err.splitlines()) == 1, err
    assert best.is_dir() and not (tmp_path / "p.csv").exists()  # nothing deleted, nothing half-written

    # as a script (scripts/predict.py's run_script, with tiny_cnn_test registered): exit 2, one line, and no
    # "Event loop is closed" tracebacks from the reads still in flight
    _truncate(broken / "checkpoints" / "12" / "state")
    runner = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_train_tiny; "
              "from hotspot_jax.cli import run_script; run_script('hotspot_jax.predict:main')")
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", runner, "--checkpoint", str(broken / "checkpoints" / "12"), str(image),
                           "--out", str(tmp_path / "q.csv")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"checkpoint {broken / 'checkpoints' / '12'} cannot be read" in lines[0], done.stderr


def test_failure_reason_is_the_innermost_first_line():
    try:
        try:
            raise ValueError('OUT_OF_RANGE: Error reading "params.fc/0" in OCDBT database at local file "/x/": '
                             "Requested byte range [0, 10) is not valid for value of size 4\nmore")
        except ValueError as inner:
            raise Exception("Encountered error while reading array. See full TensorStore details: {...}") from inner
    except Exception as err:
        assert failure_reason(err) == "OUT_OF_RANGE: Requested byte range [0, 10) is not valid for value of size 4"
