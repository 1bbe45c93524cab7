"""Read a torch state_dict from a ``.pth`` file, a dict or an ``nn.Module`` as numpy arrays.

Files are checked before torch sees them, so a truncated download or a file of another kind gives a
message that says so instead of a pickle or zip traceback. torch is imported only when needed.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hotspot_jax.errors import ConfigError

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # torch's legacy (pre-1.6) format
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since 1.6


def _import_torch(what: str):
    try:
        import torch
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the install
        raise ConfigError(
            f"{what} needs torch, which is not installed: pip install 'hotspot_jax[torch]'"
        ) from err
    return torch


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (recorded in converted checkpoints' metadata)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path) -> None:
    """Fail with a clear message for a missing, empty, truncated or non-torch file."""
    if not path.exists():
        raise ConfigError(f"checkpoint file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a directory; pass the .pth file torch.save wrote")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ConfigError(f"checkpoint file {path} is empty")
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise ConfigError(
                f"checkpoint file {path} is truncated or corrupt (a zip archive without its end record); "
                "download it again"
            )
        return
    if head[:2] in _PICKLE_MAGIC:
        return
    raise ConfigError(
        f"{path} is not a torch checkpoint (expected a .pth file written by torch.save, "
        f"found a file starting with {head!r})"
    )


def _load_file(path: Path) -> Any:
    _check_file(path)
    torch = _import_torch(f"reading {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot read checkpoint {path}: {first} (truncated download, or not a state_dict saved by "
            "torch.save(model.state_dict(), ...)?)"
        ) from err


def _unwrap(obj: Any, origin: str) -> Mapping[str, Any]:
    """The state_dict inside common training-checkpoint wrappers ({"state_dict": ...}, {"model": ...})."""
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{origin} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    for wrapper in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and not _is_array_like(inner):
            return _unwrap(inner, origin)
    return obj


def _is_array_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _to_numpy(key: str, value: Any, origin: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if value.dtype.is_floating_point:
            value = value.float()
        value = value.numpy()
    elif not _is_array_like(value):
        raise ConfigError(f"{origin}: entry {key!r} is a {type(value).__name__}, not a tensor")
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return array


def load_state_dict(source: Any) -> dict[str, np.ndarray]:
    """A torch state_dict as ``{key: float32 numpy array}`` from a path, a dict or an ``nn.Module``.

    A ``module.`` prefix (from ``nn.DataParallel``) is stripped.
    """
    if isinstance(source, (str, os.PathLike)):
        origin = str(source)
        raw = _unwrap(_load_file(Path(source)), origin)
    elif isinstance(source, Mapping):
        origin = "the given state_dict"
        raw = _unwrap(source, origin)
    elif hasattr(source, "state_dict") and callable(source.state_dict):
        origin = f"the given {type(source).__name__} module"
        raw = source.state_dict()
    else:
        raise ConfigError(
            f"cannot read weights from a {type(source).__name__}; pass a .pth path, a state_dict or a torch module"
        )
    if not raw:
        raise ConfigError(f"{origin} is empty (no tensors)")
    out = {str(k): _to_numpy(str(k), v, origin) for k, v in raw.items()}
    if all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out
