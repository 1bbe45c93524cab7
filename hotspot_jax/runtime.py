"""The process settings the project's measurements ran under, applied by one call at each entry point.

:func:`configure` adds the default XLA:CPU flags (:mod:`hotspot_jax.xla_flags`) to ``XLA_FLAGS`` and restarts
the process once with glibc's huge-page tunables (:mod:`hotspot_jax.hugepages`). The scripts call it first
thing; importing ``hotspot_jax`` or ``architectures`` changes nothing in the environment, so a library user
who wants the same settings calls it at the top of their own ``__main__`` (before JAX computes anything: XLA
reads ``XLA_FLAGS`` when its first backend is created). Both settings change speed, never values.
"""

from __future__ import annotations

from hotspot_jax import xla_flags
from hotspot_jax.hugepages import restart_with_hugepages


def configure() -> None:
    """Set this process's XLA flags and restart it once on huge pages (module doc); idempotent."""
    xla_flags.apply()
    restart_with_hugepages()
