"""The machine's measured matmul peak: the best FLOP/s of a large square matrix product.

Measured with JAX (XLA's CPU/GPU dot) and, when available, with torch (MKL/oneDNN on CPU, cuBLAS on
CUDA), in the same process as the benchmark; the larger of the two is the peak that achieved FLOP/s are
compared to. The float32 peak sits at the top level of the result (as in every older result file); a
bfloat16 peak, measured on a GPU and whenever bfloat16 cases are run, sits under ``"bfloat16"``, and
bfloat16 cases are compared with it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

#: on a GPU one product takes well under a millisecond: each timed repetition queues enough products to
#: last about this long and waits once, so launch, wait and timer overheads do not lower the peak
GPU_MIN_REP_SECONDS = 0.05


def _best_rate(launch: Callable[[], Any], wait: Callable[[Any], Any], flops: float, reps: int,
               min_rep_seconds: float = 0.0) -> tuple[float, list[float], int]:
    """Best FLOP/s over ``reps`` timed repetitions, each queueing ``launch()`` enough times to last
    ``min_rep_seconds`` (once when 0) and then ``wait``-ing for the last result; also the repetitions'
    seconds and the products per repetition."""
    wait(launch())  # warm-up (compilation, thread pools, cuBLAS handles)
    calls = 1
    if min_rep_seconds > 0:
        t0 = time.perf_counter()
        wait(launch())
        calls = max(1, min(1000, math.ceil(min_rep_seconds / max(time.perf_counter() - t0, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls - 1):
            launch()
        wait(launch())
        times.append(time.perf_counter() - t0)
    return flops * calls / min(times), times, calls


def _entry(n: int, rate: float, times: list[float], calls: int) -> dict[str, Any]:
    """One peak measurement as stored in the JSON."""
    out: dict[str, Any] = {"n": n, "flops_per_second": rate, "rep_seconds": [round(t, 5) for t in times]}
    if calls > 1:
        out["products_per_rep"] = calls
    return out


def default_size() -> int:
    """The peak's matrix size: 2048 on a CPU; 8192 on a GPU, where a 2048 product is too short to reach it."""
    return 8192 if jax.default_backend() == "gpu" else 2048


def jax_matmul_peak(n: int = 2048, reps: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """Best FLOP/s of an ``n x n`` product in ``dtype`` with XLA on JAX's default device (2 n^3 FLOPs)."""
    rng = np.random.default_rng(0)
    a = jax.device_put(rng.standard_normal((n, n), dtype=np.float32).astype(jnp.dtype(dtype)))
    b = jax.device_put(rng.standard_normal((n, n), dtype=np.float32).astype(jnp.dtype(dtype)))
    dot = jax.jit(jnp.dot)
    min_s = GPU_MIN_REP_SECONDS if jax.default_backend() == "gpu" else 0.0
    return _entry(n, *_best_rate(lambda: dot(a, b), jax.block_until_ready, 2.0 * n**3, reps, min_s))


def torch_matmul_peak(n: int = 2048, reps: int = 5, threads: int | None = None, dtype: str = "float32",
                      device: str = "cpu") -> dict[str, Any]:
    """Best FLOP/s of an ``n x n`` product in ``dtype`` with torch on ``device`` (``threads``: CPU only)."""
    import torch

    if threads and device == "cpu":
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    if device == "cuda":
        wait, min_s = (lambda _: torch.cuda.synchronize()), GPU_MIN_REP_SECONDS
    else:
        wait, min_s = (lambda _: None), 0.0  # a CPU product is done when torch.mm returns
    return _entry(n, *_best_rate(lambda: torch.mm(a, b), wait, 2.0 * n**3, reps, min_s))


def _peak_of(n: int, reps: int, dtype: str, torch_device: str | None, threads: int | None) -> dict[str, Any]:
    """``{"jax": {...}, "torch": {...}, "flops_per_second": best}`` in one dtype (torch: None = not measured)."""
    out: dict[str, Any] = {"jax": jax_matmul_peak(n, reps, dtype)}
    if torch_device:
        out["torch"] = torch_matmul_peak(n, reps, threads, dtype, torch_device)
    out["flops_per_second"] = max(v["flops_per_second"] for v in out.values())
    return out


def measure_peak(n: int = 2048, reps: int = 5, with_torch: bool = True, threads: int | None = None,
                 dtypes: tuple[str, ...] | list[str] = ("float32",), torch_device: str = "cpu") -> dict[str, Any]:
    """``{"flops_per_second": best, "jax": {...}, "torch": {...}}`` in float32 for this machine, now, plus
    ``"bfloat16": {...}`` alike on a GPU or when ``dtypes`` holds bfloat16.

    torch is measured only on the kind of device JAX runs on (CPU with CPU, CUDA with a GPU), since the
    peak is what JAX's achieved FLOP/s are compared with.
    """
    backend = jax.default_backend()
    same_kind = torch_device == ("cuda" if backend == "gpu" else "cpu")
    torch_on = torch_device if with_torch and same_kind else None
    out = _peak_of(n, reps, "float32", torch_on, threads)
    if backend == "gpu" or "bfloat16" in dtypes:
        out["bfloat16"] = _peak_of(n, reps, "bfloat16", torch_on, threads)
    return out

