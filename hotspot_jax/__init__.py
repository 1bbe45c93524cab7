"""hotspot_jax: hotspot classification in infrared images of PV modules, in JAX and Flax.

Importing it changes no environment variable; the scripts apply the measured XLA flags and memory settings
with :func:`hotspot_jax.runtime.configure`.
"""

__version__ = "0.1.0"
