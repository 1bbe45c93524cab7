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
#: JAX's GPU plugins: recorded only where installed (a CPU result lists none)
GPU_PACKAGES = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt")


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask), the thread count both frameworks get."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpuinfo_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """``key: value`` fields of the first processor in /proc/cpuinfo (or of ``cpuinfo``); {} if unreadable."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return {}
    fields = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    return _cpuinfo_fields().get("model name") or platform.processor() or "unknown"


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def cpu_details(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU family/model numbers and the SIMD extensions XLA's and torch's kernels pick from.

    "AMD EPYC" alone hides the generation: a Zen 3 (no AVX-512) and a Zen 4 (AVX-512, BF16) VM of the
    same name gave this project's benchmark different JAX/torch ratios, so every result records this.
    """
    fields = _cpuinfo_fields(cpuinfo)
    if not fields:
        return {}
    flags = set(fields.get("flags", "").split())
    return {"family": fields.get("cpu family"), "model": fields.get("model"),
            "simd": [f for f in SIMD_FLAGS if f in flags]}


def versions() -> dict[str, str | None]:
    """Python's and the packages' versions (None: not installed; JAX's GPU plugins only when installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    for pkg in GPU_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def torch_cuda_info() -> dict[str, Any]:
    """The GPUs torch runs on, by name, and the CUDA and cuDNN versions torch was built with."""
    import torch

    return {
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def machine_info(argv: Sequence[str] | None = None, torch_device: str | None = None) -> dict[str, Any]:
    """Everything needed to interpret (and rerun) a benchmark result; ``devices`` names JAX's devices
    (``gpu:NVIDIA H100 80GB HBM3``), ``torch_cuda`` torch's GPUs when ``torch_device`` is cuda."""
    devices = jax.local_devices()
    argv = list(sys.argv if argv is None else argv)
    extra = {"torch_cuda": torch_cuda_info()} if torch_device == "cuda" else {}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in argv),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_details": cpu_details(),
        "cpu_cores": cpu_cores(),
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # huge pages: hotspot_jax/hugepages.py
        "versions": versions(),
        **extra,
    }
