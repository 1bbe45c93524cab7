"""``load_dataset``: find the data (explicit path, ``HOTSPOT_DATA``, the TFDS cache, a download), build
the TFDS dataset once, and load it into memory as :class:`ModuleImages`.

The cache (``HOTSPOT_CACHE_DIR``, default ``~/.cache/hotspot_jax/tensorflow_datasets``) holds one built
dataset plus ``source.json`` recording the fingerprint of the release it was built from; a different
release given explicitly triggers a rebuild. Builds go to a temporary folder inside the cache and
are renamed into place only when complete, so a failed build never leaves a dataset a later run would use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hotspot_jax.data.arrays import ModuleImages
from hotspot_jax.data.classes import IMAGE_SHAPE
from hotspot_jax.data.download import OFFICIAL_RELEASE, OFFLINE_HINT, ReleaseSpec, download_release
from hotspot_jax.data.release import Release
from hotspot_jax.errors import DataError

DATA_ENV = "HOTSPOT_DATA"
CACHE_ENV = "HOTSPOT_CACHE_DIR"
BUILDER_NAME = "infrared_solar_modules"
BUILDER_VERSION = "1.0.0"
SOURCE_FILE = "source.json"


def default_cache_dir() -> Path:
    """``$HOTSPOT_CACHE_DIR`` if set, else ``~/.cache/hotspot_jax/tensorflow_datasets``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hotspot_jax" / "tensorflow_datasets"


def dataset_dir(cache_dir: str | os.PathLike) -> Path:
    """Folder of the built dataset inside ``cache_dir`` (TFDS layout ``<name>/<version>``)."""
    return Path(cache_dir) / BUILDER_NAME / BUILDER_VERSION


def cached_source(cache_dir: str | os.PathLike) -> dict | None:
    """The ``source.json`` record of the dataset built in ``cache_dir``, or None if there is none."""
    path = dataset_dir(cache_dir) / SOURCE_FILE
    if not (path.parent / "dataset_info.json").is_file() or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_dataset(source: str | os.PathLike, cache_dir: str | os.PathLike, *, progress: bool = True,
                  fingerprint: str | None = None) -> Path:
    """Build the TFDS dataset from ``source`` into ``cache_dir`` (atomically); return its folder."""
    from hotspot_jax.data.tfds_builder import InfraredSolarModules  # tensorflow_datasets is slow to import

    cache_dir = Path(cache_dir)
    with Release(source) as rel:
        fingerprint = fingerprint or rel.fingerprint()
        metadata_sha256 = hashlib.sha256(rel.metadata_bytes()).hexdigest()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    from tensorflow_datasets.core.utils import tqdm_utils

    shown = tqdm_utils._active  # TFDS's own bars follow `progress` during this build only
    tqdm_utils.display_progress_bar(progress)
    try:
        builder = InfraredSolarModules(source=source, data_dir=str(tmp_root), progress=progress)
        builder.download_and_prepare()
        built = dataset_dir(tmp_root)
        (built / SOURCE_FILE).write_text(json.dumps({
            "fingerprint": fingerprint,
            "metadata_sha256": metadata_sha256,
            "source": str(Path(source).resolve()),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, indent=1))
        final = dataset_dir(cache_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.replace(final, tmp_root / "old")  # removed with tmp_root below
        os.replace(built, final)
        return final
    finally:
        tqdm_utils.display_progress_bar(shown)
        shutil.rmtree(tmp_root, ignore_errors=True)


def _parse_raw(rows: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse serialized tf.Example records of this builder directly (fast path; ~10x TFDS's generic decode)."""
    from tensorflow_datasets.proto import tf_example_pb2

    feats = [tf_example_pb2.Example.FromString(r).features.feature for r in rows]
    flat = b"".join([f["image"].bytes_list.value[0] for f in feats])
    images = np.frombuffer(flat, dtype=np.uint8).reshape((len(rows),) + IMAGE_SHAPE)
    labels = np.array([f["label"].int64_list.value[0] for f in feats], dtype=np.int32)
    ids = np.array([f["image_id"].bytes_list.value[0].decode() for f in feats], dtype=str)
    return images, labels, ids


def _decode_rows(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays from TFDS-decoded examples (the generic, slower path)."""
    images = np.stack([r["image"] for r in rows]).astype(np.uint8, copy=False).reshape((len(rows),) + IMAGE_SHAPE)
    labels = np.array([r["label"] for r in rows], dtype=np.int32)
    ids = np.array([r["image_id"].decode() if isinstance(r["image_id"], bytes) else str(r["image_id"])
                    for r in rows], dtype=str)
    return images, labels, ids


def load_cached(cache_dir: str | os.PathLike) -> ModuleImages:
    """Load the dataset built in ``cache_dir`` through TFDS's array_record data source.

    Records are read as raw bytes and parsed here (the generic TFDS decoder is used as a fallback).
    """
    from tensorflow_datasets.core import decode

    from hotspot_jax.data.tfds_builder import InfraredSolarModules

    record = cached_source(cache_dir)
    if record is None:
        raise DataError(f"{dataset_dir(cache_dir)}: no built dataset here")
    try:
        builder = InfraredSolarModules(data_dir=str(cache_dir))
        raw_source = builder.as_data_source(split="train", deserialize_method=decode.DeserializeMethod.RAW_BYTES)
        n = len(raw_source)
        if n == 0:
            raise ValueError("the dataset has no records")
        try:
            images, labels, ids = _parse_raw(list(raw_source.__getitems__(range(n))))
        except (KeyError, IndexError, ValueError, UnicodeDecodeError):
            source = builder.as_data_source(split="train")
            images, labels, ids = _decode_rows(list(source.__getitems__(range(n))))
    except Exception as err:  # a damaged cache: say where it is, so it can be deleted
        raise DataError(f"{dataset_dir(cache_dir)}: cannot read the cached dataset ({err}); delete this "
                        f"folder and run again") from None
    return ModuleImages(images=images, labels=labels, ids=ids, metadata_sha256=record.get("metadata_sha256", ""))


def load_dataset(data: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
                 download: bool = True, release: ReleaseSpec = OFFICIAL_RELEASE,
                 progress: bool = True) -> ModuleImages:
    """Load InfraredSolarModules (or one's own images: hotspot_jax.data.own_data) into memory, building the
    TFDS dataset first if needed.

    Where the data comes from, in order: ``data`` (a zip or an extracted folder), the ``HOTSPOT_DATA``
    environment variable, the dataset already built in ``cache_dir`` (default :func:`default_cache_dir`),
    then (if ``download``) a download of ``release`` into ``<cache_dir>/downloads``. A given source
    is rebuilt only when its content fingerprint differs from the cached build's.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if data is None:
        env = os.environ.get(DATA_ENV, "").strip()
        data = env or None
    from hotspot_jax.data.own_data import is_own_data, load_own_data

    if data is not None and is_own_data(data):  # one's own labelled images: a folder of class folders, or a CSV
        return load_own_data(data, cache_dir, progress=progress)
    if data is not None:
        with Release(data) as rel:
            fingerprint = rel.fingerprint()
        record = cached_source(cache_dir)
        if record is None or record.get("fingerprint") != fingerprint:
            build_dataset(data, cache_dir, progress=progress, fingerprint=fingerprint)
        return load_cached(cache_dir)
    if cached_source(cache_dir) is not None:
        return load_cached(cache_dir)
    if not download:
        raise DataError(f"no dataset given and none built in {cache_dir}; {OFFLINE_HINT}")
    zip_path = download_release(cache_dir / "downloads", release, progress=progress)
    build_dataset(zip_path, cache_dir, progress=progress)
    return load_cached(cache_dir)
