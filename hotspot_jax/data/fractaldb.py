"""Formula-driven pretraining images, after FractalDB (Kataoka et al., ACCV 2020): each class is a random
iterated function system (IFS) of 2-8 affine maps, each image a rendering of it with one parameter perturbed,
written as an image folder (``DIR/<class>/<n>.png``) that trains an ordinary ``own``-task run. No image of
InfraredSolarModules is involved, so such a run can start any run without a leak.

Rendering suits the target images: a grey density map (log of the chaos-game visits per pixel, scaled to 0-255)
on InfraredSolarModules' 40 x 24 grid (height x width), the attractor's bounding box stretched to fill it.
A class is kept when its attractor is finite and fills at least :data:`MIN_FILL` of a 64 x 64 rendering, as
FractalDB's filling-rate rule does; with the box stretched per axis that rejects mainly diverging and degenerate
systems (about 80% of random ones pass). Everything is a function of ``seed`` and the constants below
(tests/test_fractaldb.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from hotspot_jax.data.classes import IMAGE_SHAPE
from hotspot_jax.errors import ConfigError

MIN_FILL = 0.2
MAPS = (2, 8)  # the number of affine maps of a class, inclusive
WALKERS = 512  # chaos-game chains run side by side
STEPS = 120  # iterations of each chain; the first BURN_IN are not drawn
BURN_IN = 20
WEIGHTS = (0.8, 1.2)  # an image multiplies one parameter of one map by a weight in this range
DONE_FILE = "fractaldb.json"


def sample_ifs(rng: np.random.Generator) -> np.ndarray:
    """A random IFS: ``(n, 6)`` rows ``a b c d e f`` of the maps ``(x, y) -> (a x + b y + e, c x + d y + f)``,
    every parameter uniform in [-1, 1] (FractalDB's search space)."""
    n = int(rng.integers(MAPS[0], MAPS[1] + 1))
    return rng.uniform(-1.0, 1.0, size=(n, 6))


def map_probabilities(ifs: np.ndarray) -> np.ndarray:
    """Each map's chance in the chaos game: proportional to ``|det|`` of its linear part (a degenerate map
    still gets a little)."""
    det = np.abs(ifs[:, 0] * ifs[:, 3] - ifs[:, 1] * ifs[:, 2]) + 1e-3
    return det / det.sum()


def chaos_points(ifs: np.ndarray, rng: np.random.Generator, walkers: int = WALKERS, steps: int = STEPS) -> np.ndarray:
    """``(walkers * (steps - BURN_IN), 2)`` points of the attractor by the chaos game; non-finite when the
    system diverges."""
    choice = rng.choice(len(ifs), size=(steps, walkers), p=map_probabilities(ifs))
    xy = np.zeros((walkers, 2))
    out = np.empty((steps - BURN_IN, walkers, 2))
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            m = ifs[choice[t]]
            xy = np.stack([m[:, 0] * xy[:, 0] + m[:, 1] * xy[:, 1] + m[:, 4],
                           m[:, 2] * xy[:, 0] + m[:, 3] * xy[:, 1] + m[:, 5]], axis=1)
            if t >= BURN_IN:
                out[t - BURN_IN] = xy
    return out.reshape(-1, 2)


def density(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """Visits per pixel of ``shape`` (height, width), the box of the points' 0.5-99.5 percentiles stretched
    over it (the sparse outskirts outside it dropped); None when the points diverge or collapse to (nearly) a
    point or a line along an axis (a diagonal line is stretched over the image and fails the filling rate)."""
    if not np.isfinite(points).all() or (np.abs(points) > 1e6).any():
        return None
    lo, hi = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    span = hi - lo
    if (span < 1e-6).any():
        return None
    points = points[((points >= lo) & (points <= hi)).all(1)]
    h, w = shape
    col = np.minimum(((points[:, 0] - lo[0]) / span[0] * w).astype(int), w - 1)
    row = np.minimum(((points[:, 1] - lo[1]) / span[1] * h).astype(int), h - 1)
    counts = np.zeros(h * w)
    np.add.at(counts, row * w + col, 1.0)
    return counts.reshape(h, w)


def filling_rate(ifs: np.ndarray, rng: np.random.Generator) -> float:
    """The share of a 64 x 64 rendering's pixels the attractor visits (0 for a diverging or degenerate one)."""
    counts = density(chaos_points(ifs, rng), (64, 64))
    return 0.0 if counts is None else float((counts > 0).mean())


def render(ifs: np.ndarray, rng: np.random.Generator, shape: tuple[int, int] = IMAGE_SHAPE[:2]) -> np.ndarray | None:
    """A grey uint8 image of ``shape``: log(1 + visits), its maximum at 255; None when degenerate."""
    counts = density(chaos_points(ifs, rng), shape)
    if counts is None:
        return None
    level = np.log1p(counts)
    return np.round(level / level.max() * 255.0).astype(np.uint8)


def search_classes(n_classes: int, rng: np.random.Generator, max_tries: int = 200_000) -> list[np.ndarray]:
    """``n_classes`` random IFS that pass the filling-rate rule (:data:`MIN_FILL`)."""
    found: list[np.ndarray] = []
    for _ in range(max_tries):
        if len(found) == n_classes:
            return found
        ifs = sample_ifs(rng)
        if filling_rate(ifs, rng) >= MIN_FILL:
            found.append(ifs)
    raise ConfigError(f"found only {len(found)} of {n_classes} fractal classes in {max_tries} tries")


def instance(ifs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image of the class ``ifs``: one parameter of one map times a weight in :data:`WEIGHTS`, rendered
    (retried with another weight if that system degenerates; the class's own system as a last resort)."""
    for _ in range(20):
        varied = ifs.copy()
        varied[rng.integers(len(ifs)), rng.integers(6)] *= rng.uniform(*WEIGHTS)
        image = render(varied, rng)
        if image is not None:
            return image
    image = render(ifs, rng)
    assert image is not None, "a class passed the filling-rate rule, so it renders"
    return image


def finished(out: Path, settings: dict) -> bool:
    """True when ``out`` holds finished formula images of ``settings``; ConfigError when ``out`` exists and
    holds anything else (it is never overwritten)."""
    if not out.exists():
        return False
    if (out / DONE_FILE).is_file():
        stored = json.loads((out / DONE_FILE).read_text())
        if stored == settings:
            return True
        raise ConfigError(f"{out} holds formula images of other settings ({stored}); choose another folder")
    raise ConfigError(f"{out} exists and is not a folder of formula images; choose another folder")


def write_fractaldb(out: str | os.PathLike, n_classes: int, per_class: int, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``n_classes`` x ``per_class`` images to ``out/<class>/<n>.png`` and, last, ``out/fractaldb.json``;
    a folder that already has it (same settings) is kept as it is, and any other existing ``out`` is refused,
    never overwritten. Written in a temporary folder beside ``out`` and renamed, so ``out`` is never half-made
    (a killed process can leave its hidden ``.<name>-*`` temporary folder behind)."""
    out = Path(out)
    settings = {"classes": n_classes, "per_class": per_class, "seed": seed, "shape": list(IMAGE_SHAPE[:2]),
                "min_fill": MIN_FILL, "maps": list(MAPS), "weights": list(WEIGHTS), "walkers": WALKERS,
                "steps": STEPS, "burn_in": BURN_IN, "box": "0.5-99.5 percentiles"}
    if finished(out, settings):
        return out
    if n_classes < 2 or per_class < 4:
        raise ConfigError("formula images need at least 2 classes and 4 images a class (a class is split 70/15/15)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        rng = np.random.default_rng(seed)
        classes = search_classes(n_classes, rng)
        width = len(str(n_classes - 1))
        for k, ifs in enumerate(classes):
            folder = tmp / f"fractal{k:0{width}d}"
            folder.mkdir()
            class_rng = np.random.default_rng([seed, k])
            for i in range(per_class):
                Image.fromarray(instance(ifs, class_rng), mode="L").save(folder / f"{i:04d}.png")
            if progress:
                progress(k + 1, n_classes)
        (tmp / DONE_FILE).write_text(json.dumps(settings, indent=1) + "\n")
        if finished(out, settings):  # another process finished the same images meanwhile
            return out
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
