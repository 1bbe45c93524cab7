#!/usr/bin/env python
"""Evaluate a trained run on the test splits: ``python scripts/evaluate.py --workdir runs/<run>``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.hugepages import restart_with_hugepages
from hotspot_jax.evaluate.cli import main

if __name__ == "__main__":
    restart_with_hugepages()  # large buffers on huge pages: see hotspot_jax/hugepages.py
    sys.exit(run_cli(main))
