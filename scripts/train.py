#!/usr/bin/env python
"""Train one architecture on the binary hotspot task: ``python scripts/train.py --arch squeezenet``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.runtime import configure
from hotspot_jax.train.cli import main

if __name__ == "__main__":
    configure()  # XLA flags and huge pages, as measured: see hotspot_jax/runtime.py
    sys.exit(run_cli(main))
