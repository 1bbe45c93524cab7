#!/usr/bin/env python
"""JAX vs PyTorch throughput per architecture: ``python scripts/benchmark.py --archs squeezenet --image-sizes 64``."""

import sys

from hotspot_jax.bench.cli import main
from hotspot_jax.cli import run_cli
from hotspot_jax.runtime import configure

if __name__ == "__main__":
    configure()  # XLA flags and huge pages, as measured: see hotspot_jax/runtime.py
    sys.exit(run_cli(main))
