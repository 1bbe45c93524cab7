"""Prepare the InfraredSolarModules dataset (build the TFDS cache) and print the study's split summary.

Usage: python scripts/prepare_data.py [--data PATH] [--seed N] [--manifest OUT.json] ...
       python scripts/prepare_data.py --duplicates   # pixel-identical images and the splits they cross
"""

from __future__ import annotations

import signal

if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # a Ctrl-C waits for run_script's handler

import argparse
import time
from typing import Sequence

from hotspot_jax.cli import run_script


def build_parser() -> argparse.ArgumentParser:
    from hotspot_jax.data import AugmentConfig, ProtocolConfig
    from hotspot_jax.data.loading import default_cache_dir

    d, a = ProtocolConfig(), AugmentConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None,
                   help="the release zip or its extracted folder; if not given: $HOTSPOT_DATA, then the "
                        "cache, then a download")
    p.add_argument("--cache-dir", default=None,
                   help=f"TFDS cache folder; if not given: $HOTSPOT_CACHE_DIR, else {default_cache_dir()}")
    p.add_argument("--no-download", action="store_true", help="never download; fail if no data is found")
    p.add_argument("--task", choices=("binary", "multiclass"), default="binary", help="which split to summarise")
    p.add_argument("--seed", type=int, default=d.seed, help="split seed")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="validation fraction per group")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction, help="test fraction per group")
    p.add_argument("--no-anomaly-per-hotspot", type=float, default=d.no_anomaly_per_hotspot,
                   help="No-Anomaly images per (augmented) hotspot image in each binary split")
    p.add_argument("--no-rotate180", action="store_true", help="disable the 180-degree rotation copy")
    p.add_argument("--no-gaussian", action="store_true", help="disable the Gaussian-filter copy")
    p.add_argument("--no-sharpen", action="store_true", help="disable the sharpening copy")
    p.add_argument("--gaussian-sigma", type=float, default=a.gaussian_sigma, help="imgaussfilt sigma")
    p.add_argument("--sharpen-sigma", type=float, default=a.sharpen_sigma, help="imsharpen Radius (Gaussian sigma)")
    p.add_argument("--sharpen-amount", type=float, default=a.sharpen_amount, help="imsharpen Amount")
    p.add_argument("--sharpen-threshold", type=float, default=a.sharpen_threshold, help="imsharpen Threshold")
    p.add_argument("--manifest", default=None, help="write the split manifest (JSON of image ids) here")
    p.add_argument("--duplicates", action="store_true",
                   help="instead of a split summary: list the groups of pixel-identical images under different ids, "
                        "and which of them cross a held-out boundary (hotspot splits, their cross-validation "
                        "folds, the 12-class pretrainings) for the --duplicate-seeds")
    p.add_argument("--duplicate-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], metavar="N",
                   help="the seeds --duplicates checks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hotspot_jax.data import AugmentConfig, ProtocolConfig, load_dataset, make_binary_split, make_multiclass_split

    args = build_parser().parse_args(argv)
    augment = AugmentConfig(rotate180=not args.no_rotate180, gaussian=not args.no_gaussian,
                            sharpen=not args.no_sharpen, gaussian_sigma=args.gaussian_sigma,
                            sharpen_sigma=args.sharpen_sigma, sharpen_amount=args.sharpen_amount,
                            sharpen_threshold=args.sharpen_threshold)
    config = ProtocolConfig(seed=args.seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                            no_anomaly_per_hotspot=args.no_anomaly_per_hotspot, augment=augment)
    start = time.perf_counter()
    data = load_dataset(args.data, cache_dir=args.cache_dir, download=not args.no_download,
                        progress=not args.quiet)
    print(f"loaded {len(data):,} images in {time.perf_counter() - start:.1f} s "
          f"(metadata sha256 {data.metadata_sha256})")
    if args.duplicates:
        from hotspot_jax.data.duplicates import duplicate_report

        print(duplicate_report(data, args.duplicate_seeds))
        return 0
    counts = data.class_counts()
    print("classes: " + ", ".join(f"{c} {n:,}" for c, n in counts.items()))
    manifest = (make_binary_split if args.task == "binary" else make_multiclass_split)(data, config)
    print(manifest.summary())
    if args.manifest:
        print(f"manifest written to {manifest.to_json(args.manifest)}")
    return 0


if __name__ == "__main__":
    run_script(main, preload=("hotspot_jax.data",))  # Ctrl-C from the first line on: one line, exit 130 (hotspot_jax/cli.py)
