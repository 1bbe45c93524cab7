"""Shared pytest fixtures: the real dataset (built once per session into a tmp cache) and a tmp
``HOTSPOT_CACHE_DIR`` so tests never touch the user's cache."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lets tests import fixtures_data

from hotspot_jax import xla_flags  # noqa: E402

xla_flags.apply()  # the tests run under the scripts' XLA flags (the CPU path's kernel gradient depends on them)

REAL_BUILD_SECONDS: list[float] = []  # the session's real-data build time, for reporting

DEFAULT_REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/InfraredSolarModules.zip"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_dir(tmp_path_factory):
    """Point HOTSPOT_CACHE_DIR at a session tmp dir for the whole test session."""
    old = os.environ.get("HOTSPOT_CACHE_DIR")
    os.environ["HOTSPOT_CACHE_DIR"] = str(tmp_path_factory.mktemp("hotspot_cache"))
    yield
    if old is None:
        os.environ.pop("HOTSPOT_CACHE_DIR", None)
    else:
        os.environ["HOTSPOT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    """The real InfraredSolarModules zip/folder: $HOTSPOT_DATA, else ../shared/data/...; skip if absent."""
    env = os.environ.get("HOTSPOT_DATA", "").strip()
    path = Path(env).expanduser() if env else DEFAULT_REAL_DATA
    if not path.exists():
        pytest.skip(f"real dataset not found at {path} (set HOTSPOT_DATA to the InfraredSolarModules zip)")
    return path


@pytest.fixture(scope="session")
def real_dataset(real_data_path, tmp_path_factory):
    """The real dataset as ModuleImages, built with TFDS once per session into a session tmp dir."""
    from hotspot_jax.data import load_dataset

    cache = tmp_path_factory.mktemp("real_tfds")
    start = time.perf_counter()
    data = load_dataset(real_data_path, cache_dir=cache, progress=False)
    REAL_BUILD_SECONDS.append(time.perf_counter() - start)
    return data
