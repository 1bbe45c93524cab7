#!/usr/bin/env python
"""Reproduce the study's comparison for a recipe: ``python scripts/reproduce.py --recipe paper-cpu --seeds 0 1 2``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.reproduce.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
