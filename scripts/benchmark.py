#!/usr/bin/env python
"""JAX vs PyTorch throughput per architecture: ``python scripts/benchmark.py --archs squeezenet --image-sizes 64``."""

import signal

if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # a Ctrl-C waits for run_script's handler
    from hotspot_jax.cli import run_script

    # Ctrl-C at any moment: one line, exit 130 (hotspot_jax/cli.py); XLA flags and huge pages: hotspot_jax/runtime.py
    run_script("hotspot_jax.bench.cli:main", runtime=True)
