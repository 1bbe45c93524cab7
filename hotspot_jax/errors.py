"""User-facing errors: anything a user can cause (bad path, bad file, bad option) raises these.

Command-line entry points catch :class:`HotspotError` and print its message without a traceback.
"""


class HotspotError(Exception):
    """An error the user can fix; its message says what is wrong and, where possible, what to do."""


class DataError(HotspotError):
    """The dataset (zip, folder, metadata, an image) is missing or malformed."""


class ConfigError(HotspotError):
    """A bad option, an unknown name, or an inconsistent configuration."""


class CheckpointError(HotspotError):
    """A checkpoint cannot be read: damaged (a truncated or emptied file) or not this run's."""

    def __init__(self, message: str, path=None, reason: str = ""):
        super().__init__(message)
        self.path = path  # the checkpoint directory that failed
        self.reason = reason  # why, in a few words (the innermost error's first line)
