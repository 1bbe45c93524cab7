#!/usr/bin/env python
"""Score module images with a trained model: ``python scripts/predict.py --checkpoint DIR IMAGES...``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.hugepages import restart_with_hugepages
from hotspot_jax.predict import main

if __name__ == "__main__":
    restart_with_hugepages()  # large buffers on huge pages: see hotspot_jax/hugepages.py
    sys.exit(run_cli(main))
