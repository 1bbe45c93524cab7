"""The generic torch-to-Flax naming and layout rule, plus the few per-architecture exceptions.

Because every Flax submodule is named after its torchvision attribute (Sequential indices joined
with ``_``), one rule converts every architecture: ``layer1.0.downsample.1.running_var`` becomes
``batch_stats/layer1_0/downsample_1/var``. Exceptions go in :data:`OVERRIDES`, keyed by arch name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

Path = tuple[str, ...]  # (collection, module..., leaf), e.g. ("params", "layer1_0", "conv1", "kernel")

# torch buffers that carry no information for Flax
DROPPED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Override:
    """Exceptions to the generic rule for one architecture; keep each one small and commented.

    ``rename``: regex -> replacement applied to the torch key before the generic rule.
    ``optional``: regexes of torch keys that may be present without a Flax counterpart (they are
    dropped only when the Flax model has no such leaf, e.g. GoogLeNet's aux heads when
    ``aux_logits=False``); Flax leaves are still all required.
    ``transform``: regex -> function(array) replacing the generic layout change for matching keys.
    """

    rename: tuple[tuple[str, str], ...] = ()
    optional: tuple[str, ...] = ()
    transform: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = ()


OVERRIDES: dict[str, Override] = {
    # torchvision's GoogLeNet checkpoint keeps the aux heads even when the model is built without them.
    "googlenet": Override(optional=(r"^aux[12]\.",)),
}


def override_for(arch: str) -> Override:
    """The exceptions registered for ``arch`` (none for most architectures)."""
    return OVERRIDES.get(arch, Override())


def flax_path(torch_key: str, ndim: int, override: Override | None = None) -> Path:
    """Where a torch state_dict entry lives in the Flax variables: (collection, *modules, leaf)."""
    key = torch_key
    for pattern, repl in (override.rename if override else ()):
        key = re.sub(pattern, repl, key)
    parts = re.sub(r"\.(\d+)", r"_\1", key).split(".")
    *modules, leaf = parts
    if leaf == "weight":
        return ("params", *modules, "kernel" if ndim >= 2 else "scale")
    if leaf == "bias":
        return ("params", *modules, "bias")
    if leaf == "running_mean":
        return ("batch_stats", *modules, "mean")
    if leaf == "running_var":
        return ("batch_stats", *modules, "var")
    return ("params", *modules, leaf)  # unknown leaf: kept as is, strict matching reports it


def flax_layout(torch_key: str, array: np.ndarray, override: Override | None = None) -> np.ndarray:
    """torch's tensor layout to Flax's: conv OIHW -> HWIO, Linear (out, in) -> (in, out)."""
    for pattern, fn in (override.transform if override else ()):
        if re.search(pattern, torch_key):
            return np.ascontiguousarray(fn(array))
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return array


def is_optional(torch_key: str, override: Override | None) -> bool:
    """Whether a torch key may be left unused (see :class:`Override`)."""
    if torch_key.endswith(DROPPED_SUFFIXES):
        return True
    return any(re.search(p, torch_key) for p in (override.optional if override else ()))


def path_str(path: Path) -> str:
    """A Flax path as one readable string: ``params/layer1_0/conv1/kernel``."""
    return "/".join(path)
