"""Run the GPU check's stages one after another, each in its own process group with a time limit, inside one
overall budget; a stage that fails or runs out of time is recorded and the next one still runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from hotspot_jax.gpu_check.stages import BASE_ENV, Stage

MIN_STAGE_S = 10  # a stage is not started with less time than this left in the budget


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads; nothing if it has already gone."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_stage(stage: Stage, out: Path, root: Path, seconds_left: float) -> dict:
    """Run ``stage`` in ``root``, output to ``out/<name>.log``; its status, exit code and seconds."""
    for name in stage.outputs:  # an earlier run's results are never read as this one's
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if seconds_left < MIN_STAGE_S:
        return {"name": stage.name, "status": "skipped", "reason": "the check's time budget was spent"}
    limit = min(float(stage.timeout_s), seconds_left)
    log = out / f"{stage.name}.log"
    env = {**os.environ, **BASE_ENV, **dict(stage.env)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(stage.argv, cwd=root, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            rc = proc.wait()
            status = "timed out"
        except BaseException:  # Ctrl-C: the stage's whole process group goes with the check
            _kill_group(proc.pid)
            proc.wait()
            raise
        _kill_group(proc.pid)  # anything the stage left running in its group
    return {"name": stage.name, "status": status, "returncode": rc, "seconds": round(time.monotonic() - start, 1),
            "limit_s": round(limit, 1), "log": log.name, "command": " ".join(stage.argv)}


def run_stages(stages: list[Stage], out: Path, root: Path, budget_s: float,
               say: Callable[[str], None] = print) -> list[dict]:
    """Every stage in order within ``budget_s`` seconds in all; one line each, a failed stage's log tail."""
    deadline = time.monotonic() + budget_s
    results = []
    for stage in stages:
        say(f"[gpu-check] {stage.name}: started ({' '.join(stage.argv[1:4])} ...)")
        result = run_stage(stage, out, root, deadline - time.monotonic())
        results.append(result)
        done = f"{result['status']}" + (f" in {result['seconds']} s" if "seconds" in result else "")
        say(f"[gpu-check] {stage.name}: {done}" + (f" ({result['reason']})" if "reason" in result else ""))
        if result["status"] in ("failed", "timed out"):
            say(_tail(out / result["log"]))
    return results
