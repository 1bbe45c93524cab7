"""scripts/prepare_data.py: --help lists options with defaults; a synthetic run prints the split summary;
bad input gives one error line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fixtures_data import make_synthetic_release

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_data.py"


def _run(*args, env_cache):
    import os

    env = dict(os.environ, HOTSPOT_CACHE_DIR=str(env_cache))
    env.pop("HOTSPOT_DATA", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_data_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_lists_options_with_defaults():
    out = _load_script().build_parser().format_help()
    for opt in ("--data", "--cache-dir", "--seed", "--manifest", "--sharpen-amount", "--no-download"):
        assert opt in out
    assert "(default: 0.8)" in out and "(default: 0)" in out


def test_run_on_synthetic_release(tmp_path, capsys):
    from hotspot_jax.cli import run_cli

    zip_path = make_synthetic_release(tmp_path, {"Hot-Spot": 6, "Hot-Spot-Multi": 4, "No-Anomaly": 60})
    argv = ["--data", str(zip_path), "--quiet", "--cache-dir", str(tmp_path / "c"), "--manifest", str(tmp_path / "m.json")]
    assert run_cli(_load_script().main, argv) == 0
    out = capsys.readouterr().out
    assert "loaded 70 images" in out and "train_augmented" in out
    assert "Downloading and preparing" not in out and "Subsequent calls" not in out  # --quiet: TFDS's lines too
    m = json.loads((tmp_path / "m.json").read_text())
    assert len(m["splits"]["train"]) == 6 + 24 and m["seed"] == 0  # 10 hotspots: 6/2/2, x4 augmented


def test_bad_input_is_one_error_line(tmp_path):
    res = _run("--data", str(tmp_path / "missing.zip"), env_cache=tmp_path / "c")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.zip'}: no such file or folder (expected the InfraredSolarModules zip or "
        f"its extracted folder)"]
    res = _run("--no-download", env_cache=tmp_path / "c")
    assert res.returncode == 2 and "--data PATH or HOTSPOT_DATA=PATH" in res.stderr and "Traceback" not in res.stderr
