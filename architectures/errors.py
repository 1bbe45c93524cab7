"""Errors a caller can fix (an unknown architecture, an input too small), raised with a message saying what.

``hotspot_jax.errors`` builds its errors on these (``HotspotError`` is :class:`UserError`), so its command-line
entry points print them without a traceback; the architectures themselves import nothing from ``hotspot_jax``.
"""


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and, where possible, what to do."""


class ConfigError(UserError):
    """A bad option, an unknown name, or an inconsistent configuration."""
