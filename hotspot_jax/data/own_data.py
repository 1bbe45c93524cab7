"""One's own labelled module crops: an image folder (``DIR/<class name>/*.png|jpg|tif...``) or a CSV
(``path,label``), read into :class:`ModuleImages` through a TFDS dataset built once in the cache.

Conversion rule (docs/tasks.md#your-own-images), the same for every image, any size or mode:
1. grey: RGB(A) by luma (ITU-R 601, Pillow's ``convert("L")``), alpha dropped;
2. 16-bit (radiometric TIFF/PNG): scaled per image, its minimum to 0 and its maximum to 255
   (a constant image to 0); 8-bit as it is;
3. resized to InfraredSolarModules' 40 x 24 (height x width, bilinear, Pillow), so a model trained there
   fine-tunes on it and the network's own resize then runs as for that dataset.
Mixed sizes are fine. Everything is read and checked before anything is written: an empty class folder, an
unreadable or zero-byte image, a CSV naming a missing file, or a class with too few images to split
(fewer than :data:`MIN_PER_CLASS`) is one :class:`DataError` naming the problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hotspot_jax.data.arrays import ModuleImages
from hotspot_jax.data.classes import IMAGE_SHAPE
from hotspot_jax.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MIN_PER_CLASS = 4  # 70/15/15 with rounding half up gives every split at least one image from 4 on
BUILDER_NAME = "own_module_images"


def is_own_data(path: str | os.PathLike) -> bool:
    """True for a CSV file, or a folder of class folders (one with an image at least) that is not an
    InfraredSolarModules release."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix.lower() == ".csv"
    if not p.is_dir():
        return False
    from hotspot_jax.data.release import METADATA_NAME

    if (p / METADATA_NAME).is_file() or any((c / METADATA_NAME).is_file() for c in p.iterdir() if c.is_dir()):
        return False
    return any(f.suffix.lower() in IMAGE_SUFFIXES for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")
               for f in c.rglob("*"))  # a class folder with an image in it (else: reported as a release)


def list_images(path: str | os.PathLike) -> tuple[list[tuple[Path, str]], str]:
    """``[(image file, class name)]`` of an image folder or CSV, and the root the ids are relative to."""
    p = Path(path).expanduser()
    if p.is_file():
        return _list_csv(p), str(p.parent)
    classes = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
    if not classes:
        raise DataError(f"{p}: no class folders (expected {p}/<class name>/*.png|jpg|tif)")
    out = []
    for c in classes:
        files = sorted(f for f in c.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{c}: empty class folder (no {', '.join(IMAGE_SUFFIXES)} images)")
        out += [(f, c.name) for f in files]
    return out, str(p)


def _list_csv(path: Path) -> list[tuple[Path, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the CSV ({err})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    out = []
    for k, row in enumerate(rows, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}, line {k}: expected 'path,label', got {','.join(row)!r}")
        f = Path(row[0].strip())
        f = f if f.is_absolute() else path.parent / f
        if not f.is_file():
            raise DataError(f"{path}, line {k}: {row[0].strip()} does not exist")
        out.append((f, row[1].strip()))
    if not out:
        raise DataError(f"{path}: the CSV lists no images (expected rows 'path,label')")
    return out


def convert_image(path: Path) -> tuple[np.ndarray, str]:
    """The module docstring's rule: uint8 (40, 24, 1), and how the file was converted (its mode and size)."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            how = f"{im.mode} {im.width}x{im.height}"
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                arr = np.asarray(im).astype(np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = np.zeros_like(arr) if hi == lo else (arr - lo) * (255.0 / (hi - lo))
                grey = Image.fromarray(np.clip(np.floor(arr + 0.5), 0, 255).astype(np.uint8), mode="L")
                how += ", 16-bit scaled per image (min..max -> 0..255)"
            elif im.mode == "F":
                raise DataError(f"{path}: floating-point images are not supported; save it as 8- or 16-bit")
            else:
                grey = im.convert("L") if im.mode != "L" else im
            h, w = IMAGE_SHAPE[:2]
            if grey.size != (w, h):
                grey = grey.resize((w, h), Image.BILINEAR)
            return np.asarray(grey, dtype=np.uint8)[..., None].copy(), how
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read the image ({err})") from None


def read_own_data(path: str | os.PathLike, progress: bool = True) -> ModuleImages:
    """Read, check and convert every image (nothing is written); ids are the files' paths relative to the root."""
    from tqdm.auto import tqdm

    files, root = list_images(path)
    class_names = tuple(sorted({c for _, c in files}))
    from hotspot_jax.data.tasks import NEGATIVE_NAMES

    negative = [c for c in class_names if c.lower() in NEGATIVE_NAMES]
    if len(class_names) == 2 and len(negative) == 1:  # a two-class task: the negative class is label 0, as in the study
        class_names = (negative[0], *(c for c in class_names if c != negative[0]))
    counts = {c: sum(1 for _, k in files if k == c) for c in class_names}
    small = {c: n for c, n in counts.items() if n < MIN_PER_CLASS}
    if small:
        raise DataError(f"{path}: class(es) with too few images to split 70/15/15 (at least {MIN_PER_CLASS} "
                        f"each): {', '.join(f'{c} ({n})' for c, n in small.items())}")
    if len(class_names) < 2:
        raise DataError(f"{path}: only one class ({class_names[0]}); a classifier needs at least two")
    images = np.empty((len(files), *IMAGE_SHAPE), np.uint8)
    ids = []
    for k, (f, _) in enumerate(tqdm(files, desc="read images", disable=not progress, unit="img", leave=False)):
        images[k] = convert_image(f)[0]
        rel = os.path.relpath(f, root)
        ids.append(rel.replace(os.sep, "/"))
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: the same image is listed twice")
    labels = np.array([class_names.index(c) for _, c in files], np.int32)
    digest = hashlib.sha256(json.dumps([class_names, ids]).encode() + images.tobytes() + labels.tobytes()).hexdigest()
    return ModuleImages(images=images, labels=labels, ids=np.array(ids, dtype=str), metadata_sha256=digest,
                        class_names=class_names, own=True)


def load_own_data(path: str | os.PathLike, cache_dir: str | os.PathLike, progress: bool = True) -> ModuleImages:
    """``path``'s images through a TFDS dataset in ``<cache_dir>/own/<sha256>`` (built once, atomically)."""
    data = read_own_data(path, progress=progress)
    folder = Path(cache_dir) / "own" / data.metadata_sha256[:16]
    done = folder / "classes.json"
    if not done.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
        try:
            _builder(data.class_names, tmp).prepare_from(data)
            (tmp / "classes.json").write_text(json.dumps({"class_names": list(data.class_names),
                                                          "sha256": data.metadata_sha256, "source": str(path)}))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    record = json.loads(done.read_text())
    source = _builder(tuple(record["class_names"]), folder).as_data_source(split="train")
    rows = list(source.__getitems__(range(len(source))))
    images = np.stack([r["image"] for r in rows]).astype(np.uint8).reshape((len(rows), *IMAGE_SHAPE))
    labels = np.array([r["label"] for r in rows], np.int32)
    ids = np.array([r["image_id"].decode() if isinstance(r["image_id"], bytes) else str(r["image_id"])
                    for r in rows], dtype=str)
    return ModuleImages(images=images, labels=labels, ids=ids, metadata_sha256=record["sha256"],
                        class_names=tuple(record["class_names"]), own=True)


def _builder(class_names: tuple[str, ...], data_dir: Path):
    from hotspot_jax.data.own_data_builder import OwnModuleImages  # tensorflow_datasets is slow to import

    return OwnModuleImages(class_names=class_names, data_dir=str(data_dir))
