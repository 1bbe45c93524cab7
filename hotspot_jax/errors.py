"""User-facing errors: anything a user can cause (bad path, bad file, bad option) raises these.

Command-line entry points catch :class:`HotspotError` and print its message without a traceback.
"""


from architectures.errors import ConfigError, UserError  # noqa: F401  (ConfigError: re-exported)

#: an error the user can fix; its message says what is wrong and, where possible, what to do (the class the
#: architectures raise their errors from, so that the entry points catch both)
HotspotError = UserError


class DataError(HotspotError):
    """The dataset (zip, folder, metadata, an image) is missing or malformed."""



class CheckpointError(HotspotError):
    """A checkpoint cannot be read: damaged (a truncated or emptied file) or not this run's."""

    def __init__(self, message: str, path=None, reason: str = ""):
        super().__init__(message)
        self.path = path  # the checkpoint directory that failed
        self.reason = reason  # why, in a few words (the innermost error's first line)
