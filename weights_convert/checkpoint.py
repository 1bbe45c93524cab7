"""Save and load converted Flax variables: an orbax checkpoint plus a small JSON metadata file.

Layout: ``DIR/variables/`` (orbax ``StandardCheckpointer``) and ``DIR/meta.json`` (arch, num_classes,
source sha256, torch/torchvision versions, ...). Everything is written into a temporary sibling
directory first and renamed into place, so an interrupted save never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hotspot_jax.errors import ConfigError

META_FILE = "meta.json"
VARIABLES_DIR = "variables"
FORMAT = "hotspot_jax.flax_variables/1"


def _library_versions() -> dict[str, str]:
    """Versions of the libraries involved, from package metadata (importing torch would take seconds)."""
    from importlib import metadata

    versions = {}
    for name in ("jax", "flax", "orbax-checkpoint", "torch", "torchvision"):
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def save_variables(
    directory: str | os.PathLike,
    variables: dict[str, Any],
    *,
    arch: str,
    num_classes: int,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``variables`` ({"params", "batch_stats"}) and metadata to ``directory``; returns its path.

    ``meta`` adds fields (e.g. ``source_sha256``) to the JSON. An existing non-empty directory is an
    error unless ``overwrite``.
    """
    import orbax.checkpoint as ocp

    target = Path(directory).absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"output {target} exists and is not a directory")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ConfigError(
            f"output directory {target} already exists and is not empty; choose another --out, "
            "or add --overwrite to replace it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tree = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    record = {
        "format": FORMAT,
        "arch": arch,
        "num_classes": int(num_classes),
        "collections": {k: bool(v) for k, v in tree.items()},
        **_library_versions(),
        **(meta or {}),
    }
    # orbax cannot store an empty subtree (BN-free networks have no batch_stats): recorded in meta instead
    tree = {k: jax.tree_util.tree_map(np.asarray, v) for k, v in tree.items() if v}
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / VARIABLES_DIR, tree)
            ckptr.wait_until_finished()
        with open(tmp / META_FILE, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint written by :func:`save_variables`."""
    path = Path(directory)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise ConfigError(f"checkpoint directory {path} does not exist")
    if not meta_path.is_file() or not (path / VARIABLES_DIR).is_dir():
        raise ConfigError(
            f"{path} is not a converted checkpoint (expected {META_FILE} and {VARIABLES_DIR}/ written by "
            "python -m weights_convert)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{meta_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "arch" not in meta:
        raise ConfigError(f"{meta_path} is not metadata of a converted checkpoint (format {FORMAT!r})")
    return meta


def load_variables(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(variables, meta)`` back; variables are ``{"params", "batch_stats"}`` of jax arrays."""
    import orbax.checkpoint as ocp

    path = Path(directory).absolute()
    meta = load_meta(path)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(path / VARIABLES_DIR)
    except Exception as err:  # orbax raises several types for damaged directories
        raise ConfigError(f"cannot read the orbax checkpoint in {path / VARIABLES_DIR}: {err}") from err
    variables = {"params": tree.get("params", {}), "batch_stats": tree.get("batch_stats", {})}
    return variables, meta
