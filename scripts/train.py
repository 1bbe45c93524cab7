#!/usr/bin/env python
"""Train one architecture on the binary hotspot task: ``python scripts/train.py --arch squeezenet``."""

import sys

from hotspot_jax.cli import run_cli
from hotspot_jax.hugepages import restart_with_hugepages
from hotspot_jax.train.cli import main

if __name__ == "__main__":
    restart_with_hugepages()  # large buffers on huge pages: see hotspot_jax/hugepages.py
    sys.exit(run_cli(main))
