"""Multi-process training (hotspot_jax.train.distributed): two CPU processes joined by jax.distributed (gloo over
loopback) train to the weights and metrics of one process with two devices (through a Ctrl-C in one process only,
a peer killed mid-run, and a resume with another process count), and, for a network without dropout (whose masks
are drawn per device), of one process with one device (through scripts/reproduce.py).

Every run goes through :func:`hotspot_jax.cli.run_script` as ``scripts/train.py`` does; the test starts and
stops its own processes and kills whatever is left in a ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers tiny_cnn_test for load_trained)
from fixtures_data import make_synthetic_release
from hotspot_jax import xla_flags
from hotspot_jax.cli import run_cli
from hotspot_jax.train.cli import build_parser, main
from subprocess_lines import LineReader

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
RUNNER = f"""import signal
if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})
    import sys
    sys.path.insert(0, {str(TESTS)!r})
    from hotspot_jax.cli import run_script
    run_script(sys.argv.pop(1), runtime=True, preload=("numpy", "jax", "test_train_tiny"))
"""
TRAIN, REPRODUCE = "hotspot_jax.train.cli:main", "hotspot_jax.reproduce.cli:main"
COUNTS = {"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 200}
TINY, TINY_NO_DROPOUT = test_train_tiny.TINY, test_train_tiny.TINY_NO_DROPOUT
ARGS = ["--image-size", "16", "--limit-train", "64", "--limit-eval", "32",
        "--batch-size", "8", "--eval-batch-size", "16", "--epochs", "2", "--lr", "0.05", "--seed", "3",
        "--no-progress"]
TIMING_KEYS = ("train_seconds", "images_per_second")
TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launcher:
    """Starts training processes (one, or a group joined by jax.distributed) and kills every one left over."""

    def __init__(self, root: Path):
        self.root = root
        self.runner = root / "runner.py"
        self.runner.write_text(RUNNER)
        zpath = make_synthetic_release(root, COUNTS, seed=5)
        cache = root / "cache"
        from hotspot_jax.data import load_dataset

        load_dataset(zpath, cache_dir=cache, progress=False)  # built once: the processes only read it
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", HOTSPOT_CACHE_DIR=str(cache),
                        JAX_DISABLE_MOST_OPTIMIZATIONS="true", HOTSPOT_DATA=str(zpath))
        self.started: list[LineReader] = []

    def one(self, workdir: Path, devices: int, delay: float = 0.0, extra=(), arch: str = TINY,
            script: str = TRAIN) -> LineReader:
        """A ``scripts/train.py`` run (or ``scripts/reproduce.py`` with ``extra`` as its options)."""
        flags = xla_flags.with_defaults(f"--xla_force_host_platform_device_count={devices}")
        env = dict(self.env, XLA_FLAGS=flags, HOTSPOT_TRAIN_STEP_DELAY=str(delay))
        args = [*ARGS, "--arch", arch, "--workdir", str(workdir)] if script == TRAIN else []
        proc = LineReader([sys.executable, str(self.runner), script, *args, *extra], env)
        self.started.append(proc)
        return proc

    def group(self, workdir: Path, n: int = 2, delay: float = 0.0, arch: str = TINY, script: str = TRAIN,
              extra=()) -> list[LineReader]:
        port = _free_port()
        return [self.one(workdir, 1, delay, [*extra, "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                                             "--process-id", str(i), "--peer-timeout", "20"], arch, script)
                for i in range(n)]

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(timeout=30)


def _finish(proc: LineReader, timeout: float = 240) -> int:
    return proc.finish(timeout)


def _rows(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _leaves(path: Path) -> list[np.ndarray]:
    import jax

    from hotspot_jax.train.restore import load_trained

    return [np.asarray(x) for x in jax.tree.leaves(load_trained(path).variables)]


def _assert_close(a, b, where: str) -> None:
    """Equal structure; numbers within TOL; everything else equal."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a} vs {b}"
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: {a} vs {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert abs(a - b) <= TOL, f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _assert_same_run(x: Path, y: Path) -> None:
    """The same metrics per epoch, weights of every kept checkpoint and of the chosen one, test metrics."""
    _assert_close(_rows(x), _rows(y), "metrics.jsonl")
    kept = sorted(p.name for p in (y / "checkpoints").iterdir())  # x may keep a mid-epoch one besides
    assert kept and set(kept) <= {p.name for p in (x / "checkpoints").iterdir()}, kept
    for step in [f"checkpoints/{k}" for k in kept] + [""]:
        for a, b in zip(_leaves(x / step), _leaves(y / step)):
            np.testing.assert_allclose(a, b, rtol=0, atol=TOL, err_msg=f"{x.name} vs {y.name}: {step or 'best'}")
    ta, tb = (json.loads((d / "test_metrics.json").read_text()) for d in (x, y))
    ta["checkpoint"].pop("path"), tb["checkpoint"].pop("path")
    ta["operating_point"].pop("checkpoint", None), tb["operating_point"].pop("checkpoint", None)
    _assert_close(ta, tb, "test_metrics")


@pytest.mark.slow
def test_two_processes_train_like_one_process_through_an_interruption_a_dead_peer_and_a_resume(tmp_path):
    runs = Launcher(tmp_path)
    one_by_two, two_by_one = tmp_path / "1x2", tmp_path / "2x1"
    try:
        a = runs.one(one_by_two, 2)
        assert _finish(a) == 0, a.output

        # 1) two processes; Ctrl-C in process 1 only: both stop after the same step, save once, exit 130
        p0, p1 = runs.group(two_by_one, delay=0.3)
        p0.wait_for("train step compiled", timeout=180)
        p1.proc.send_signal(signal.SIGINT)
        assert _finish(p0) == 130, p0.output
        assert _finish(p1) == 130, p1.output
        assert "interrupted: saved" in p0.output and "Traceback" not in p0.output + p1.output, p0.output + p1.output
        assert "2 device(s)" in p0.output
        silent = [line for line in p1.output.splitlines() if not line.startswith(("[Gloo]", "I1", "W1"))]
        assert silent == [], p1.output  # process 1 prints nothing of its own
        (step,) = [int(p.name) for p in (two_by_one / "checkpoints").iterdir()]
        assert 1 <= step < 8  # mid-epoch 1

        # 2) resumed by two processes; process 1 killed in epoch 2: process 0 stops with one error line
        p0, p1 = runs.group(two_by_one, delay=0.3)
        p0.wait_for("epoch 1/2:", timeout=180)
        p1.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        rc = _finish(p0, timeout=90)
        assert rc != 0 and time.monotonic() - killed < 60, p0.output
        assert "error: process 0 of 2: another process of this run failed or stopped" in p0.output, p0.output
        assert "resuming from" in p0.output
        env = json.loads((two_by_one / "config.json").read_text())["environment"]
        assert (env["process_count"], env["device_count"], env["local_device_count"]) == (2, 2, 1)

        # 3) resumed by one process with two devices (another process count): finishes the run
        c = runs.one(two_by_one, 2)
        assert _finish(c) == 0, c.output
        assert "resuming from" in c.output and "epoch 2/2:" in c.output
    finally:
        runs.kill_all()

    _assert_same_run(two_by_one, one_by_two)
    env = json.loads((one_by_two / "config.json").read_text())["environment"]
    assert (env["process_count"], env["device_count"]) == (1, 2)


@pytest.mark.slow
def test_reproduce_runs_its_grid_with_two_processes(tmp_path):
    """scripts/reproduce.py with two processes: one summary and one report, written by process 0; the run has
    the weights and metrics of the same grid run by one process with one device (a network without dropout,
    whose numbers do not depend on the device count)."""
    runs = Launcher(tmp_path)
    recipe = ["--recipe", "paper-cpu", "--archs", TINY_NO_DROPOUT, "--seeds", "0", "--set", "image_size=16",
              "epochs=1", "batch_size=8", "--docs", "none", "--no-progress"]
    out = {n: ["--runs-dir", str(tmp_path / f"runs{n}"), "--results-dir", str(tmp_path / f"results{n}")] for n in (1, 2)}
    try:
        procs = [runs.one(tmp_path, 1, extra=[*recipe, *out[1]], script=REPRODUCE),
                 *runs.group(tmp_path, script=REPRODUCE, extra=[*recipe, *out[2]])]
        for proc in procs:
            assert _finish(proc) == 0, proc.output
    finally:
        runs.kill_all()
    assert "wrote" in procs[1].output and "report.md" in procs[1].output
    assert [line for line in procs[2].output.splitlines() if not line.startswith(("[Gloo]", "I1", "W1"))] == []
    (run1,), (run2,) = (list((tmp_path / f"runs{n}").glob(f"*/{TINY_NO_DROPOUT}-s0")) for n in (1, 2))
    _assert_same_run(run2, run1)
    env = json.loads((run2 / "config.json").read_text())["environment"]
    assert (env["process_count"], env["device_count"], env["local_device_count"]) == (2, 2, 1)
    (one,), (two,) = (list((tmp_path / f"results{n}").glob(f"*/{TINY_NO_DROPOUT}-s0.json")) for n in (1, 2))
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["machine"]["process_count"], b["machine"]["process_count"], b["machine"]["device_count"]) == (1, 2, 2)
    for key in ("test", "test_realistic", "operating_point", "history"):
        if key == "operating_point":
            a[key].pop("checkpoint", None), b[key].pop("checkpoint", None)
        if key == "history":
            a[key], b[key] = ([{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in x[key]] for x in (a, b))
        _assert_close(a[key], b[key], key)


def test_an_error_found_by_process_0_is_each_process_s_one_line(tmp_path):
    """A work directory holding another run: process 0 finds it and shares the error; both leave at once."""
    workdir = tmp_path / "other"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"run": {"arch": "resnet50", "image_size": 224, "seed": 0}}))
    runs = Launcher(tmp_path)
    try:
        procs = runs.group(workdir)
        codes = [_finish(p, timeout=120) for p in procs]
    finally:
        runs.kill_all()
    for proc, code in zip(procs, codes):
        errors = [line for line in proc.output.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and "holds another run's configuration" in errors[0], proc.output
        assert "Traceback" not in proc.output and "Terminating process" not in proc.output, proc.output


def _fails(capsys, argv, *needles):
    code = run_cli(main, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_multi_process_options_are_checked_before_anything_starts(capsys, tmp_path):
    w = ["--workdir", str(tmp_path / "w")]
    _fails(capsys, [*ARGS, *w, "--coordinator", "127.0.0.1:1234"], "needs --num-processes and --process-id")
    _fails(capsys, [*ARGS, *w, "--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"],
           "is not HOST:PORT")
    _fails(capsys, [*ARGS, *w, "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
           "--process-id must be in 0..1")
    _fails(capsys, [*ARGS, *w, "--distributed", "--process-id", "0"], "--distributed reads the cluster")
    _fails(capsys, [*ARGS, *w, "--peer-timeout", "30"], "--peer-timeout is for multi-process runs")
    assert not (tmp_path / "w").exists()


def test_help_states_the_multi_process_options_and_timeouts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--coordinator HOST:PORT", "--num-processes N", "--process-id I", "--distributed", "SLURM",
                 "--join-timeout S", "(default: 300)", "--peer-timeout S", "(default: 60)", "docs/scaling.md"):
        assert text in out, text
    assert {"coordinator", "num_processes", "process_id", "distributed"} <= set(vars(build_parser().parse_args([])))
