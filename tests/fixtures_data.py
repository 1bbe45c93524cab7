"""Synthetic InfraredSolarModules releases for tests: a zip (or folder) in the official layout.

``make_synthetic_release(tmp_path, n_per_class=...)`` writes small seeded 24x40 grayscale JPEGs and a
``module_metadata.json``; other tests reuse it to exercise loading, splits and training without the
real data.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from hotspot_jax.data import CLASS_NAMES

ROOT = "InfraredSolarModules"


def synthetic_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """A 40x24 uint8 image: a class-dependent brightness ramp plus a bright blob plus noise."""
    yy, xx = np.mgrid[0:40, 0:24]
    base = 60 + 8 * label + 30 * (yy / 39.0)
    cy, cx = rng.integers(5, 35), rng.integers(4, 20)
    blob = (40 + 10 * (label % 4)) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    img = base + blob + rng.normal(0, 6, size=(40, 24))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def jpeg_bytes(array: np.ndarray, mode: str = "L", fmt: str = "JPEG") -> bytes:
    """Encode ``array`` (H, W) or (H, W, C) as an image file in memory."""
    buf = io.BytesIO()
    Image.fromarray(array, mode=None).convert(mode).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def make_synthetic_release(tmp_path: Path, n_per_class: int | Mapping[str, int] = 2, *, as_zip: bool = True,
                           seed: int = 0, name: str = "InfraredSolarModules.zip",
                           extra_members: Mapping[str, bytes] | None = None,
                           metadata_override: dict | None = None) -> Path:
    """Write a release in the official layout under ``tmp_path``; return the zip (or the folder).

    ``n_per_class`` is an int for every class or a {class: count} mapping (classes left out get
    none); ids run from 0 in CLASS_NAMES order. ``extra_members`` adds or replaces files (paths
    relative to the ``InfraredSolarModules/`` folder, e.g. ``images/3.jpg``);
    ``metadata_override`` replaces the metadata object.
    """
    counts = {c: n_per_class for c in CLASS_NAMES} if isinstance(n_per_class, int) else dict(n_per_class)
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    metadata: dict = {}
    next_id = 0
    for label, cls in enumerate(CLASS_NAMES):
        for _ in range(counts.get(cls, 0)):
            rel = f"images/{next_id}.jpg"
            files[rel] = jpeg_bytes(synthetic_image(rng, label))
            metadata[str(next_id)] = {"image_filepath": rel, "anomaly_class": cls}
            next_id += 1
    if metadata_override is not None:
        metadata = metadata_override
    files["module_metadata.json"] = json.dumps(metadata).encode()
    files.update(extra_members or {})
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    if as_zip:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for rel, data in files.items():
                z.writestr(f"{ROOT}/{rel}", data)
        return path
    folder = tmp_path / name.removesuffix(".zip")
    for rel, data in files.items():
        target = folder / ROOT / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder


def metadata_sha256(zip_path: Path) -> str:
    """sha256 of the ``module_metadata.json`` inside a synthetic zip."""
    import hashlib

    with zipfile.ZipFile(zip_path) as z:
        return hashlib.sha256(z.read(f"{ROOT}/module_metadata.json")).hexdigest()
