"""User-facing errors: anything a user can cause (bad path, bad file, bad option) raises these.

Command-line entry points catch :class:`HotspotError` and print its message without a traceback.
"""


from architectures.errors import ConfigError, UserError  # noqa: F401  (ConfigError: re-exported)

#: an error the user can fix; its message says what is wrong and, where possible, what to do (the class the
#: architectures raise their errors from, so that the entry points catch both)
HotspotError = UserError


class DataError(HotspotError):
    """The dataset (zip, folder, metadata, an image) is missing or malformed."""

