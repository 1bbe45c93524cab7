"""Most XLA optimisations off while tiny test models compile (compile time dominates their runs), restored after."""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def optimizations_off():
    """Turn ``jax_disable_most_optimizations`` on inside the block and restore the previous value after it."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
