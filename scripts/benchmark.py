#!/usr/bin/env python
"""JAX vs PyTorch throughput per architecture: ``python scripts/benchmark.py --archs squeezenet --image-sizes 64``."""

import sys

from hotspot_jax.bench.cli import main
from hotspot_jax.cli import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
