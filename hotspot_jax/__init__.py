"""hotspot_jax: hotspot classification in infrared images of PV modules, in JAX and Flax."""

__version__ = "0.1.0"
