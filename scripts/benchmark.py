#!/usr/bin/env python
"""JAX vs PyTorch throughput per architecture: ``python scripts/benchmark.py --archs squeezenet --image-sizes 64``."""

import sys

from hotspot_jax.bench.cli import main
from hotspot_jax.cli import run_cli
from hotspot_jax.hugepages import restart_with_hugepages

if __name__ == "__main__":
    restart_with_hugepages()  # large buffers on huge pages: see hotspot_jax/hugepages.py
    sys.exit(run_cli(main))
