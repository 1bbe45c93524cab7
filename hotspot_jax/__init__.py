"""hotspot_jax: hotspot classification in infrared images of PV modules, in JAX and Flax."""

from hotspot_jax import xla_flags as _xla_flags

_xla_flags.apply()  # XLA reads XLA_FLAGS when JAX's first backend is created, so before any computation

__version__ = "0.1.0"
