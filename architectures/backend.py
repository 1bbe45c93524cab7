"""Which form the architectures' ops take: the CPU fast paths, or the plain ``lax`` ops.

The rewrites behind docs/performance.md (patches and Winograd products, fusion barriers, the shifted
depthwise sums, the written-out max-pool and batch-variance gradients, pooling before the ReLU or the
bias, fused or split channels) were measured on XLA:CPU only. Every other backend (GPU, TPU) runs the
plain ops its compiler is tuned for. tests/test_backend_paths.py holds that the plain path is taken when
this says False and gives the same values as the fast path.
"""

from __future__ import annotations

import jax


def cpu_fast_path() -> bool:
    """True when JAX's default backend is the CPU, so the CPU rewrites apply; False elsewhere."""
    return jax.default_backend() == "cpu"
