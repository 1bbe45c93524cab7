#!/usr/bin/env python
"""Score module images with a trained model: ``python scripts/predict.py --checkpoint DIR IMAGES...``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.runtime import configure
from hotspot_jax.predict import main

if __name__ == "__main__":
    configure()  # XLA flags and huge pages, as measured: see hotspot_jax/runtime.py
    sys.exit(run_cli(main))
