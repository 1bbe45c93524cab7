#!/usr/bin/env python
"""Evaluate a trained run on the test splits: ``python scripts/evaluate.py --workdir runs/<run>``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.runtime import configure
from hotspot_jax.evaluate.cli import main

if __name__ == "__main__":
    configure()  # XLA flags and huge pages, as measured: see hotspot_jax/runtime.py
    sys.exit(run_cli(main))
