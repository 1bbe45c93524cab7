#!/usr/bin/env python
"""Reproduce the study's comparison for a recipe: ``python scripts/reproduce.py --recipe paper-cpu --seeds 0 1 2``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.hugepages import restart_with_hugepages
from hotspot_jax.reproduce.cli import main

if __name__ == "__main__":
    restart_with_hugepages()  # large buffers on huge pages: see hotspot_jax/hugepages.py
    sys.exit(run_cli(main))
