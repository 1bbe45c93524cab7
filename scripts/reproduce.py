#!/usr/bin/env python
"""Reproduce the study's comparison for a recipe: ``python scripts/reproduce.py --recipe paper-cpu --seeds 0 1 2``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.runtime import configure
from hotspot_jax.reproduce.cli import main

if __name__ == "__main__":
    configure()  # XLA flags and huge pages, as measured: see hotspot_jax/runtime.py
    sys.exit(run_cli(main))
