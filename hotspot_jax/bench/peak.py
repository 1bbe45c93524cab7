"""The machine's measured float32 peak: the best FLOP/s of a large square matrix product.

Measured with JAX (XLA's CPU/GPU dot) and, when available, with torch (MKL/oneDNN on CPU), in the
same process as the benchmark; the larger of the two is the peak that achieved FLOP/s are compared to.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _best_rate(run, flops: float, reps: int) -> tuple[float, list[float]]:
    run()  # warm-up (compilation, thread pools)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return flops / min(times), times


def jax_matmul_peak(n: int = 2048, reps: int = 5) -> dict[str, Any]:
    """Best FLOP/s of an ``n x n`` float32 product with XLA (2 n^3 FLOPs per product)."""
    rng = np.random.default_rng(0)
    a = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
    b = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
    dot = jax.jit(jnp.dot)
    rate, times = _best_rate(lambda: dot(a, b).block_until_ready(), 2.0 * n**3, reps)
    return {"n": n, "flops_per_second": rate, "rep_seconds": [round(t, 5) for t in times]}


def torch_matmul_peak(n: int = 2048, reps: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Best FLOP/s of an ``n x n`` float32 product with torch on the CPU."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    rate, times = _best_rate(lambda: torch.mm(a, b), 2.0 * n**3, reps)
    return {"n": n, "flops_per_second": rate, "rep_seconds": [round(t, 5) for t in times]}


def measure_peak(n: int = 2048, reps: int = 5, with_torch: bool = True, threads: int | None = None) -> dict[str, Any]:
    """``{"flops_per_second": best, "jax": {...}, "torch": {...}}`` for this machine, now."""
    out: dict[str, Any] = {"jax": jax_matmul_peak(n, reps)}
    if with_torch and jax.default_backend() == "cpu":
        out["torch"] = torch_matmul_peak(n, reps, threads)
    out["flops_per_second"] = max(v["flops_per_second"] for v in out.values())
    return out
