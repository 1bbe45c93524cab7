"""Prediction on new module crops: find images (files, folders, zips), score them in batches, write a CSV.

Images may be any size and mode; each is read as grayscale with ``hotspot_jax.data.load_image_file``
and resized exactly as in training by the model's own pipeline, so a crop from a real inspection is
scored the way the test set was.
"""

from __future__ import annotations

import csv
import os
import zipfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from hotspot_jax.errors import DataError, HotspotError
from hotspot_jax.evaluate.atomic import atomic_open
from hotspot_jax.evaluate.metrics import CLASS_NAMES, check_threshold, predict_labels

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
"""File name endings (any case) that folder and zip scans pick up; files named explicitly are always read."""

PREDICTION_COLUMNS = ("image", "hotspot_probability", "predicted", "input_note")
"""``input_note`` is empty for an image like the training crops, else says how it differs and was converted."""


@dataclass(frozen=True)
class ImageSource:
    """One image to score: a file, or a member of a zip (``member`` set)."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """How the image is named in the CSV and in errors: ``path`` or ``archive.zip:member``."""
        return str(self.path) if self.member is None else f"{self.path}:{self.member}"


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _zip_members(path: Path) -> list[ImageSource]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [info.filename for info in zf.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{path}: cannot read the zip file ({err})") from None
    names = [n for n in names if _is_image_name(n) and not n.startswith("__MACOSX/")]
    return [ImageSource(path, n) for n in sorted(names)]


def _folder_images(path: Path) -> list[ImageSource]:
    found = []
    for root, dirs, files in os.walk(path, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if _is_image_name(f))
    return [ImageSource(p) for p in sorted(found)]


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[ImageSource]:
    """Expand files, folders (recursively, :data:`IMAGE_EXTENSIONS`) and zips into a list of images.

    Order: inputs as given, each folder/zip sorted by path. Raises DataError for a missing input or
    when nothing is found.
    """
    if not inputs:
        raise DataError("no images given: pass image files, folders or zip files")
    sources: list[ImageSource] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            sources.extend(_folder_images(path))
        elif path.is_file():
            if path.suffix.lower() == ".zip":
                sources.extend(_zip_members(path))
            else:
                sources.append(ImageSource(path))
        elif path.exists():
            raise DataError(f"{path} is neither a file nor a folder")
        else:
            raise DataError(f"{path} does not exist")
    if not sources:
        shown = ", ".join(str(i) for i in inputs)
        raise DataError(f"no images found in {shown} (looked for {' '.join(IMAGE_EXTENSIONS)} files, "
                        "in folders recursively and inside zip files)")
    return sources


def read_source_bytes(source: ImageSource, zips: dict[Path, zipfile.ZipFile] | None = None) -> bytes:
    """The raw bytes of one image; DataError naming it if it cannot be read."""
    try:
        if source.member is None:
            return source.path.read_bytes()
        zf = None if zips is None else zips.get(source.path)
        if zf is None:
            zf = zipfile.ZipFile(source.path)
            if zips is not None:
                zips[source.path] = zf
        return zf.read(source.member)
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError, EOFError) as err:
        raise DataError(f"{source.name}: cannot read the file ({err})") from None


def iter_batches(items: Sequence[Any], batch_size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``batch_size`` items."""
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def write_predictions(path: str | os.PathLike, names: Sequence[str], probs: np.ndarray, threshold: float,
                      task: Any = None, class_probs: np.ndarray | None = None,
                      notes: Sequence[str] | None = None) -> None:
    """Write the CSV atomically (temp file, then rename). Columns by task: hotspot ``image,
    hotspot_probability, predicted``; a two-class anomaly or own task ``<positive class>_probability`` and
    its class names; classes12 also ``predicted_class`` and one ``p_<class>`` column per class
    (``hotspot_probability`` = P(Hot-Spot) + P(Hot-Spot-Multi), ``predicted`` Hotspot or Rest); one's own
    many classes ``image, probability, predicted`` (the predicted class) and the ``p_<class>`` columns. The
    last column, ``input_note``, says how an input differs from the training crops (:func:`input_note`)."""
    name = getattr(task, "name", "hotspot")
    columns, labels, per_class = list(PREDICTION_COLUMNS[:3]), CLASS_NAMES, False
    if task is not None and task.binary and name != "hotspot":
        columns[1] = f"{task.class_names[task.positive].lower()}_probability"
        labels = (task.class_names[1 - task.positive], task.class_names[task.positive])
    elif name == "classes12":
        labels, per_class = ("Rest", "Hotspot"), True
        columns += ["predicted_class"]
    elif task is not None and not task.binary:  # own many-class data
        columns[1], per_class = "probability", True
    if per_class:
        columns += [f"p_{c}" for c in task.class_names]
    columns.append("input_note")
    notes = list(notes) if notes else [""] * len(names)
    pred = predict_labels(probs, threshold)
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for k, (image, prob, guess) in enumerate(zip(names, probs, pred)):
            if name == "own" and not task.binary:
                row = [image, f"{float(prob):.6f}", task.class_names[int(np.argmax(class_probs[k]))]]
            else:
                row = [image, f"{float(prob):.6f}", labels[guess]]
            if name == "classes12":
                row.append(task.class_names[int(np.argmax(class_probs[k]))])
            if per_class:
                row += [f"{p:.6f}" for p in class_probs[k]]
            writer.writerow(row + [notes[k]])


_MODE_NOTES = {
    "RGB": "RGB colour converted to grayscale (luma)",
    "RGBA": "RGB colour converted to grayscale (luma), alpha dropped",
    "LA": "alpha dropped",
    "P": "palette colours converted to grayscale (luma)",
    "PA": "palette colours converted to grayscale (luma), alpha dropped",
    "CMYK": "CMYK colour converted to grayscale",
    "YCbCr": "colour converted to grayscale (its luma)",
    "1": "1-bit black and white read as 0/255 grayscale",
    "I;16": "16-bit values scaled to 8-bit (divided by 257)",
    "I;16B": "16-bit values scaled to 8-bit (divided by 257)",
    "I;16L": "16-bit values scaled to 8-bit (divided by 257)",
    "I;16N": "16-bit values scaled to 8-bit (divided by 257)",
}


def input_note(path: Path, input_hw: tuple[int, int]) -> str:
    """How an image file differs from the training crops (mode, size) and how it was converted; "" if it does not.

    Reads only the header. The conversions are those of ``load_image_file`` and ``preprocess``; the
    network input size ``input_hw`` is where every image, training crops included, is resized to.
    """
    from PIL import Image

    from hotspot_jax.data.classes import IMAGE_SHAPE

    h, w = IMAGE_SHAPE[:2]
    try:
        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
    except Exception:  # noqa: BLE001 - it was read a moment ago; a note is not worth an error
        return ""
    parts = []
    if mode != "L":
        parts.append(_MODE_NOTES.get(mode, f"{mode} image converted to 8-bit grayscale"))
    if (height, width) != (h, w):
        parts.append(f"{width}x{height} px, not {w}x{h}: resized to the network's {input_hw[1]}x{input_hw[0]} "
                     "like the training crops, but its detail differs")
    return "; ".join(parts)


def load_source(source: ImageSource, scratch: Path) -> np.ndarray:
    """One image as grayscale uint8 ``(H, W, 1)`` via ``load_image_file``; zip members go through ``scratch``.

    DataError naming the image (``archive.zip:member`` for zip members) if it cannot be read.
    """
    image, _ = load_source_with_note(source, scratch, None)
    return image


def load_source_with_note(source: ImageSource, scratch: Path, input_hw: tuple[int, int] | None,
                          own: bool = False) -> tuple[np.ndarray, str]:
    """:func:`load_source` and, when ``input_hw`` is given, its :func:`input_note`. ``own``: a model trained on
    one's own images, whose inputs get their conversion rule (hotspot_jax.data.own_data.convert_image), the
    one its training images got, so no note."""
    from hotspot_jax.data import load_image_file

    if own:
        from hotspot_jax.data.own_data import convert_image

        path = source.path
        if source.member is not None:
            path = scratch / ("member" + Path(source.member).suffix.lower())
            path.write_bytes(read_source_bytes(source))
        try:
            return convert_image(path)[0], ""
        except DataError as err:
            raise DataError(str(err).replace(str(path), source.name)) from None
    if source.member is None:
        image = load_image_file(source.path)
        return image, input_note(source.path, input_hw) if input_hw else ""
    data = read_source_bytes(source)
    tmp = scratch / ("member" + Path(source.member).suffix.lower())
    tmp.write_bytes(data)
    try:
        image = load_image_file(tmp)
        return image, input_note(tmp, input_hw) if input_hw else ""
    except DataError as err:
        raise DataError(str(err).replace(str(tmp), source.name)) from None
    finally:
        tmp.unlink(missing_ok=True)


def make_float_predictor(tm: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Class probabilities ``(N, K)`` for already preprocessed float32 ``(N, S, S, 3)`` input, jitted once
    per shape: the softmax of ``model.apply(variables, x, train=False)`` in float32, as
    ``TrainedModel.predict_class_proba`` computes after its ``preprocess``.
    """
    import jax
    import jax.numpy as jnp

    from hotspot_jax.train.step import tta_views

    model, variables = tm.model, tm.variables
    tta = tm.config["run"].get("tta", "none")

    @jax.jit
    def probs(variables, x):  # flips commute with the resize, so the run's flips apply to x as to the images
        views = [jax.nn.softmax(model.apply(variables, v, train=False).astype(jnp.float32), axis=-1)
                 for v in tta_views(x, tta)]
        return sum(views[1:], views[0]) / len(views)

    return lambda x: np.asarray(probs(variables, x))


def preprocess_batch(images: Sequence[np.ndarray], size: int | tuple[int, int]) -> np.ndarray:
    """The training ``preprocess`` applied to images of mixed sizes: grouped by shape, result in input order."""
    from hotspot_jax.data import preprocess
    from hotspot_jax.data.preprocess import size_hw

    out = np.empty((len(images), *size_hw(size), 3), np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, img in enumerate(images):
        groups.setdefault(img.shape, []).append(k)
    for idx in groups.values():
        out[idx] = np.asarray(preprocess(np.stack([images[k] for k in idx]), size))
    return out


OnBatch = Callable[[Sequence[np.ndarray], np.ndarray], None]


def _score_batch(tm: Any, predictor: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], batch: int,
                 on_batch: OnBatch | None) -> np.ndarray:
    """Hotspot probabilities of up to ``batch`` loaded images, padded to ``batch`` so one compilation serves all."""
    x = preprocess_batch(images, tm.input_hw)
    if on_batch is not None:
        on_batch(images, x)
    n = x.shape[0]
    if n < batch:
        x = np.concatenate([x, np.repeat(x[:1], batch - n, axis=0)])
    return predictor(x)[:n]


def predict_arrays(tm: Any, names: Sequence[str], images: np.ndarray, *, batch_size: int = 256,
                   progress: bool = True, on_batch: OnBatch | None = None) -> PredictionResult:
    """Score uint8 images ``(N, H, W, 1)`` (a split of the dataset) as :func:`predict_sources` scores files."""
    from hotspot_jax.data.tasks import positive_scores

    predictor = make_float_predictor(tm)
    batch = max(1, min(batch_size, len(images)))
    probs = [np.zeros((0, tm.task.num_classes), np.float32)]
    for start in tqdm(range(0, len(images), batch), desc="predict", unit="batch", disable=not progress,
                      dynamic_ncols=True):
        probs.append(_score_batch(tm, predictor, list(images[start:start + batch]), batch, on_batch))
    class_probs = np.concatenate(probs)
    return PredictionResult(list(names), positive_scores(tm.task, class_probs), [], class_probs)


@dataclass
class PredictionResult:
    """Names and positive-class probabilities of the scored images (hotspot; anomaly; for classes12
    hotspot vs rest), every class's probability, and the skipped images with the reason."""

    names: list[str]
    probs: np.ndarray
    skipped: list[tuple[str, str]]
    class_probs: np.ndarray | None = None
    notes: list[str] = dataclasses.field(default_factory=list)  # per scored image: see :func:`input_note`


def predict_sources(tm: Any, sources: Sequence[ImageSource], *, batch_size: int = 256, skip_bad: bool = False,
                    progress: bool = True, on_batch: OnBatch | None = None) -> PredictionResult:
    """Score ``sources`` in fixed-size batches (the last one padded), so the model compiles once.

    An unreadable image raises DataError naming it, or with ``skip_bad`` is left out and reported.
    ``on_batch(images, x)`` sees each batch's loaded images and their model input (the report uses it).
    """
    import tempfile

    if batch_size < 1:
        raise HotspotError(f"--batch-size must be at least 1, got {batch_size}")
    predictor = make_float_predictor(tm)
    batch = min(batch_size, len(sources))
    names: list[str] = []
    notes: list[str] = []
    probs: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=len(sources), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    with tempfile.TemporaryDirectory(prefix="hotspot_predict_") as scratch:
        try:
            for chunk in iter_batches(sources, batch):
                images, chunk_names = [], []
                for source in chunk:
                    try:
                        image, note = load_source_with_note(source, Path(scratch), tm.input_hw, tm.task.name == "own")
                        images.append(image)
                        chunk_names.append(source.name)
                        notes.append(note)
                    except DataError as err:
                        if not skip_bad:
                            raise
                        skipped.append((source.name, str(err)))
                if images:
                    probs.append(_score_batch(tm, predictor, images, batch, on_batch))
                    names.extend(chunk_names)
                bar.update(len(chunk))
        finally:
            bar.close()
    from hotspot_jax.data.tasks import positive_scores

    class_probs = np.concatenate(probs) if probs else np.zeros((0, tm.task.num_classes), np.float32)
    return PredictionResult(names, positive_scores(tm.task, class_probs), skipped, class_probs, notes)


def flag_threshold(given: float | None, point: dict[str, Any] | None) -> tuple[float, str]:
    """The threshold to flag modules at, and where it came from: ``--threshold``, else the checkpoint's stored
    operating point, else 0.5 (the study's)."""
    if given is not None:
        return float(given), "--threshold"
    if point is not None:
        return float(point["threshold"]), (f"the checkpoint's operating point: validation sensitivity >= "
                                           f"{point['target_sensitivity']:g}")
    return 0.5, "0.5: the checkpoint has no operating point"


def build_parser():
    """The prediction options, each listed with its default."""
    import argparse

    from hotspot_jax.evaluate.cli import DefaultsHelpFormatter

    p = argparse.ArgumentParser(
        prog="predict.py",
        formatter_class=DefaultsHelpFormatter,
        description="Score infrared images of PV modules with a trained model: writes a CSV of image, hotspot "
        "probability and predicted class (No-Anomaly or Hotspot). Images of any size and colour mode are "
        "read as grayscale and resized exactly as in training.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGES",
                   help=f"image files, folders (searched recursively for {' '.join(IMAGE_EXTENSIONS)}) "
                   "or zip files of module crops (none with --split)")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="training work directory (its best checkpoint) or a checkpoint directory inside one")
    p.add_argument("--out", default="predictions.csv", metavar="CSV", help="output CSV (replaced atomically)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per inference batch")
    p.add_argument("--threshold", type=float, metavar="P",
                   help="an image is predicted Hotspot when its hotspot probability is above this (default: the "
                   "operating point stored with the checkpoint, chosen on validation data; 0.5 if it has none)")
    from hotspot_jax.data.tasks import TASK_NAMES

    p.add_argument("--task", choices=TASK_NAMES,
                   help="the task the checkpoint must have been trained for; another one is an error "
                   "(default: the checkpoint's own)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable images and list them on stderr instead of stopping at the first")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/index.html: one self-contained page (no server, no network) with a row per "
                   "image sorted by probability, its Grad-CAM heat map, a class filter and a threshold slider; "
                   "unreadable images are skipped and listed on it (default: no report)")
    p.add_argument("--split", choices=("test", "test_realistic", "val"),
                   help="score this split of the checkpoint's own run instead of IMAGES: labelled, so the report adds "
                   "the confusion matrix and ROC curve (default: none; score IMAGES)")
    p.add_argument("--data", metavar="PATH",
                   help="InfraredSolarModules zip or folder for --split (default: $HOTSPOT_DATA, else the path recorded "
                   "in the run, else the dataset already built in the cache)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _report_notes(result: PredictionResult, input_hw: tuple[int, int], shown: int = 5) -> None:
    """On stderr: the images that are not like the training crops and how each was converted (the first
    ``shown``; all of them in the CSV's ``input_note`` column)."""
    import sys

    from hotspot_jax.data.classes import IMAGE_SHAPE

    odd = [(name, note) for name, note in zip(result.names, result.notes) if note]
    if not odd:
        return
    h, w = IMAGE_SHAPE[:2]
    print(f"note: {len(odd)} of {len(result.names)} images are not like the training crops ({w}x{h} 8-bit "
          "grayscale); their scores may be less reliable (input_note column):", file=sys.stderr)
    for name, note in odd[:shown]:
        print(f"  {name}: {note}", file=sys.stderr)
    if len(odd) > shown:
        print(f"  ... and {len(odd) - shown} more", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Find the images, load the model, score, write the CSV, print a one-line summary."""
    import sys

    from hotspot_jax.errors import ConfigError

    args = build_parser().parse_args(argv)
    if args.threshold is not None:
        check_threshold(args.threshold, "--threshold")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a CSV file name")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    checkpoint = Path(args.checkpoint).expanduser()
    if not checkpoint.exists():
        raise ConfigError(f"--checkpoint {checkpoint} does not exist")
    if args.split and args.images:
        raise ConfigError("give IMAGES or --split, not both")
    if args.data and not args.split:
        raise ConfigError("--data is read only with --split")
    if args.report and Path(args.report).expanduser().exists() and not Path(args.report).expanduser().is_dir():
        raise ConfigError(f"--report {args.report} exists and is not a folder")
    sources = None if args.split else collect_images(args.images)

    from hotspot_jax.train.restore import load_trained, require_classifier

    tm = load_trained(checkpoint)
    require_classifier(tm, "predict classes")
    if args.task is not None and args.task != tm.task.name:
        raise ConfigError(f"--checkpoint {checkpoint} is a {tm.task.name} model, not {args.task}")
    threshold, why = flag_threshold(args.threshold, tm.operating_point)
    collector = None
    if args.report:
        from hotspot_jax.report import ReportCollector, check_task

        check_task(tm)
        collector = ReportCollector(tm, min(args.batch_size, 64))
    labels = None
    if args.split:
        from hotspot_jax.evaluate.cli import load_split_arrays, resolve_data

        arrays, _ = load_split_arrays(tm, resolve_data(args.data, tm.config), [args.split], not args.no_progress)
        split = arrays[args.split]
        result = predict_arrays(tm, [str(i) for i in split.ids], split.images, batch_size=args.batch_size,
                                progress=not args.no_progress, on_batch=collector)
        if collector is not None:
            from hotspot_jax.report import report_labels

            labels = report_labels(tm.task, split.labels)
        sources = result.names
    else:
        result = predict_sources(tm, sources, batch_size=args.batch_size, skip_bad=args.skip_bad or bool(args.report),
                                 progress=not args.no_progress, on_batch=collector)
    for name, reason in result.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if not result.names:
        raise DataError(f"none of the {len(sources)} images could be read; nothing written")
    _report_notes(result, tm.input_hw)
    write_predictions(out, result.names, result.probs, threshold, tm.task, result.class_probs, result.notes)
    if collector is not None:
        page = _write_report(args, tm, result, collector, labels, threshold, why)
        print(f"wrote the report {page}")
    skipped = f", skipped {len(result.skipped)} unreadable" if result.skipped else ""
    scored = f"{len(result.names)} images scored with {tm.arch} ({tm.image_size}px, task {tm.task.name})"
    if tm.task.name == "own" and not tm.task.binary:
        counts = np.bincount(result.class_probs.argmax(-1), minlength=tm.task.num_classes)
        print(f"{scored}: predicted " + ", ".join(f"{c} {n}" for c, n in zip(tm.task.class_names, counts))
              + f"{skipped}; wrote {out}")
        return 0
    n_hot = int(predict_labels(result.probs, threshold).sum())
    positive = tm.task.class_names[tm.task.positive] if tm.task.binary else "Hotspot"
    print(f"{scored}: {n_hot} predicted {positive} (probability > {threshold:.4g}, {why}){skipped}; wrote {out}")
    return 0


def _write_report(args: Any, tm: Any, result: PredictionResult, collector: Any, labels: np.ndarray | None,
                  threshold: float, why: str) -> Path:
    """The report page of a finished prediction (``--report``)."""
    from hotspot_jax.report import ReportData, check_task, write_report

    if args.split:
        source = f"the {args.split} split of the run (its manifest.json), {len(result.names)} labelled images"
    else:
        source = ", ".join(str(i) for i in args.images)
    negative, positive = check_task(tm)
    model = {"arch": tm.arch, "image_size": tm.image_size, "task": tm.task.name,
             "initialisation": tm.initialisation, "checkpoint": str(tm.checkpoint), "epoch": tm.epoch}
    data = ReportData(names=result.names, probs=result.probs, images=collector.images, maps=collector.heat_maps(),
                      threshold=threshold, threshold_source=why, model=model, skipped=result.skipped, labels=labels,
                      heatmap_method=collector.method, source=source, class_names=(negative, positive))
    return write_report(Path(args.report).expanduser(), data, title=f"{positive} report: {tm.arch}")
