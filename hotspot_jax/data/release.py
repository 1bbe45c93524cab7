"""Read and validate a release of InfraredSolarModules (the zip, or its extracted folder) into memory.

Every problem a user can cause (missing or truncated zip, empty folder, bad metadata, a metadata entry
pointing at a missing image, an unknown class, an image of the wrong size or mode, an unreadable JPEG)
raises :class:`DataError` naming the file and the problem, before anything is written anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from hotspot_jax.data.arrays import ModuleImages
from hotspot_jax.data.classes import CLASS_NAMES, IMAGE_SHAPE
from hotspot_jax.errors import DataError

METADATA_NAME = "module_metadata.json"
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError)


def _id_sort_key(image_id: str) -> tuple:
    """Numeric ids in numeric order, anything else after them in string order."""
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


class Release:
    """Read access to one release, a zip or a folder; ``where(rel)`` names a member for messages."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or folder (expected the InfraredSolarModules zip "
                            f"or its extracted folder)")
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self.root = self._find_folder_root()
        else:
            self.root = self._open_zip()

    # -- locating module_metadata.json ------------------------------------------------------------
    def _find_folder_root(self) -> str:
        for cand in (self.path, self.path / "InfraredSolarModules"):
            if (cand / METADATA_NAME).is_file():
                return str(cand)
        subdirs = sorted(p for p in self.path.iterdir() if p.is_dir()) if self.path.is_dir() else []
        found = [p for p in subdirs if (p / METADATA_NAME).is_file()]
        if len(found) == 1:
            return str(found[0])
        if not any(self.path.iterdir()):
            raise DataError(f"{self.path}: the folder is empty (expected InfraredSolarModules/{METADATA_NAME} "
                            f"and images/<id>.jpg)")
        raise DataError(f"{self.path}: no {METADATA_NAME} found in this folder or its subfolders "
                        f"(expected InfraredSolarModules/{METADATA_NAME} and images/<id>.jpg)")

    def _open_zip(self) -> str:
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as err:
            raise DataError(f"{self.path}: not a valid zip file, truncated or corrupt ({err})") from None
        except OSError as err:
            raise DataError(f"{self.path}: cannot read the file ({err.strerror or err})") from None
        names = [n for n in self._zip.namelist() if posixpath.basename(n) == METADATA_NAME]
        if not names:
            raise DataError(f"{self.path}: the zip has no {METADATA_NAME} (expected "
                            f"InfraredSolarModules/{METADATA_NAME} and images/<id>.jpg)")
        best = min(names, key=lambda n: (n.count("/"), n))
        self._members = {i.filename: i for i in self._zip.infolist()}
        return posixpath.dirname(best)

    # -- member access ----------------------------------------------------------------------------
    def _member(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if self._zip is not None else os.path.join(self.root, rel)

    def where(self, rel: str) -> str:
        """Human-readable location of ``rel`` (``zip:member`` or a file path)."""
        return f"{self.path}:{self._member(rel)}" if self._zip is not None else self._member(rel)

    def exists(self, rel: str) -> bool:
        if self._zip is not None:
            return self._member(rel) in self._members
        return os.path.isfile(self._member(rel))

    def read(self, rel: str) -> bytes:
        """Bytes of member ``rel``; DataError naming it if it cannot be read (e.g. a corrupt zip entry)."""
        try:
            if self._zip is not None:
                return self._zip.read(self._member(rel))
            with open(self._member(rel), "rb") as f:
                return f.read()
        except _READ_ERRORS as err:
            raise DataError(f"{self.where(rel)}: cannot read ({err})") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "Release":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata ---------------------------------------------------------------------------------
    def metadata_bytes(self) -> bytes:
        return self.read(METADATA_NAME)

    def metadata(self) -> list[tuple[str, str, str]]:
        """Validated ``(id, image_filepath, anomaly_class)`` entries, sorted by numeric id."""
        where = self.where(METADATA_NAME)
        raw = self.metadata_bytes()
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{where}: not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{where}: expected an object {{\"<id>\": {{\"image_filepath\": ..., "
                            f"\"anomaly_class\": ...}}}}, got {type(meta).__name__}")
        if not meta:
            raise DataError(f"{where}: lists no images")
        entries = []
        for image_id, entry in meta.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("image_filepath"), str) \
                    or not isinstance(entry.get("anomaly_class"), str):
                raise DataError(f"{where}: entry {image_id!r} must have string fields 'image_filepath' "
                                f"and 'anomaly_class', got {entry!r}")
            rel, cls = entry["image_filepath"], entry["anomaly_class"]
            if cls not in CLASS_NAMES:
                raise DataError(f"{where}: image {image_id!r} has unknown anomaly_class {cls!r}; "
                                f"known classes: {', '.join(CLASS_NAMES)}")
            norm = posixpath.normpath(rel.replace("\\", "/"))
            if norm.startswith("../") or norm == ".." or posixpath.isabs(norm):
                raise DataError(f"{where}: image {image_id!r} has image_filepath {rel!r} outside the release")
            if not self.exists(norm):
                raise DataError(f"{where}: image {image_id!r} points at {rel!r}, which does not exist "
                                f"({self.where(norm)})")
            entries.append((str(image_id), norm, cls))
        entries.sort(key=lambda e: _id_sort_key(e[0]))
        return entries

    def fingerprint(self) -> str:
        """sha256 over the metadata and the images' CRC-32s: identifies this release's content.

        For a zip the CRCs of all members under the release folder come from its directory (cheap);
        for a folder the listed image files are read.
        """
        h = hashlib.sha256(self.metadata_bytes())
        if self._zip is not None:
            prefix = self.root + "/" if self.root else ""
            for name in sorted(self._members):
                info = self._members[name]
                if name.startswith(prefix) and not info.is_dir():
                    h.update(f"\n{name[len(prefix):]}\t{info.CRC:08x}\t{info.file_size}".encode())
            return h.hexdigest()
        for image_id, rel, _cls in self.metadata():
            data = self.read(rel)
            h.update(f"\n{image_id}\t{rel}\t{zlib.crc32(data):08x}\t{len(data)}".encode())
        return h.hexdigest()


def decode_module_image(data: bytes, where: str) -> np.ndarray:
    """Decode one release JPEG into uint8 (40, 24, 1); DataError naming ``where`` if it is not one."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode, size = im.mode, im.size
            arr = np.asarray(im) if mode == "L" else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{where}: cannot decode the image ({err})") from None
    height, width, _ = IMAGE_SHAPE
    if mode != "L" or size != (width, height):
        raise DataError(f"{where}: image is {mode} {size[0]}x{size[1]} (width x height); expected a "
                        f"single-channel (L) {width}x{height} image")
    return arr.reshape(IMAGE_SHAPE)


def read_release(path: str | os.PathLike, *, progress: bool = True) -> ModuleImages:
    """Read and validate a whole release (zip or folder) into a :class:`ModuleImages` (no caching)."""
    with Release(path) as rel:
        entries = rel.metadata()
        meta_sha = hashlib.sha256(rel.metadata_bytes()).hexdigest()
        images = np.empty((len(entries),) + IMAGE_SHAPE, dtype=np.uint8)
        labels = np.empty(len(entries), dtype=np.int32)
        for k, (_id, member, cls) in enumerate(tqdm(entries, desc=f"reading {rel.path.name}", unit="img",
                                                   disable=not progress, leave=False)):
            images[k] = decode_module_image(rel.read(member), rel.where(member))
            labels[k] = CLASS_NAMES.index(cls)
        ids = np.array([e[0] for e in entries], dtype=str)
    return ModuleImages(images=images, labels=labels, ids=ids, metadata_sha256=meta_sha)


def check_release_content(path: str | os.PathLike, *, metadata_sha256: str | None, num_images: int | None) -> None:
    """Content check of a release: its metadata's sha256 and its number of listed images.

    Raises DataError saying what differs (used after a download, where the zip's own bytes may vary).
    """
    with Release(path) as rel:
        got_sha = hashlib.sha256(rel.metadata_bytes()).hexdigest()
        if metadata_sha256 is not None and got_sha != metadata_sha256:
            raise DataError(f"{rel.where(METADATA_NAME)}: sha256 is {got_sha}, expected {metadata_sha256} "
                            f"(not the expected release, or a corrupted download)")
        if num_images is not None:
            n = len(rel.metadata())
            if n != num_images:
                raise DataError(f"{rel.path}: lists {n} images, expected {num_images}")
