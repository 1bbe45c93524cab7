"""What the benchmark ran on and with: CPU, cores, devices, library versions, date, command line."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Sequence

import jax

PACKAGES = ("hotspot_jax", "jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchvision")


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask), the thread count both frameworks get."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine_info(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything needed to interpret (and rerun) a benchmark result."""
    devices = jax.local_devices()
    argv = list(sys.argv if argv is None else argv)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in argv),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": cpu_cores(),
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # huge pages: hotspot_jax/hugepages.py
        "versions": versions(),
    }
