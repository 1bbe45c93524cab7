"""Find a published torchvision weight file (``resnet50.tv_in1k``) in torch's cache, or download it.

Offline machines must not hang on a network timeout: the cache is checked first, then a 3-second
reachability probe decides; ``HOTSPOT_OFFLINE=1`` skips the probe. torchvision's file names end in
the first 8 hex digits of the file's sha256, which is verified.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import architectures
from hotspot_jax.errors import ConfigError
from weights_convert.state_dict import file_sha256

DOWNLOAD_HOST = "download.pytorch.org"
PROBE_TIMEOUT_S = 3.0


def torch_cache_dir() -> Path:
    """torchvision's download folder (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/...``)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def host_reachable(host: str = DOWNLOAD_HOST, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:443`` opens within ``timeout`` seconds (DNS included)."""
    if os.environ.get("HOTSPOT_OFFLINE", "") not in ("", "0"):
        return False
    result = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result)


def check_hash_prefix(path: Path) -> None:
    """Verify the sha256 prefix that torchvision puts in its file names (``resnet50-0676ba61.pth``)."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if match is None:
        return
    digest = file_sha256(path)
    if not digest.startswith(match.group(1)):
        raise ConfigError(
            f"{path} is damaged: its sha256 starts with {digest[:8]}, its name says {match.group(1)}; "
            "delete it and download it again"
        )


def resolve_weights(name: str) -> Path:
    """Local path of the published weight set ``name`` (``arch.tag``), downloading only if online."""
    spec = architectures.weight_spec(name)
    cached = torch_cache_dir() / spec.file_name
    if cached.is_file():
        check_hash_prefix(cached)
        return cached
    if not host_reachable():
        raise ConfigError(
            f"weights {name} ({spec.file_name}) are not in torchvision's cache {cached.parent} and "
            f"{DOWNLOAD_HOST} cannot be reached (offline?); download {spec.file_name} on a connected "
            "machine and pass --checkpoint FILE.pth"
        )
    try:
        import torch
        import torchvision.models
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the install
        raise ConfigError("downloading weights needs torch and torchvision: pip install 'hotspot_jax[torch]'") from err
    url = torchvision.models.get_weight(spec.torchvision_enum).url
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=None, progress=True)
    except Exception as err:  # network errors come in many types
        raise ConfigError(f"downloading {url} failed: {err}; pass --checkpoint FILE.pth instead") from err
    check_hash_prefix(cached)
    return cached
