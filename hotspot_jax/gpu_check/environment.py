"""``python -m hotspot_jax.gpu_check.environment OUT.json``: versions, devices and the GPU as the check saw them."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata

PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint",
            "tensorflow-datasets", "numpy", "torch", "torchvision")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def collect() -> dict:
    """Python, package versions, nvidia-smi's GPU line, JAX's backend and devices, torch's CUDA device."""
    import jax

    out = {
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "nvidia_smi": _nvidia_smi(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
    }
    try:
        import torch

        out["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        out["torch_cuda"] = None
    from architectures.ops import impl

    out["architectures_impl"] = impl.default_name()  # "reference" off the CPU
    return out


def main(argv: list[str]) -> int:
    info = collect()
    text = json.dumps(info, indent=2)
    print(text)
    if argv:
        with open(argv[0], "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
