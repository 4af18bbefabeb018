"""Errors a user can act on, shown as one line by the CLI and the Slicer module."""


class MRIDenoiseError(Exception):
    """A problem with the user's input, settings or environment (not a bug in this library)."""


class InputError(MRIDenoiseError, ValueError):
    """The input volume, file or request cannot be processed as it is (also a ValueError for callers)."""


class OutputError(MRIDenoiseError):
    """An output could not be written completely (disk full, permissions); nothing was left behind."""


class ModelError(MRIDenoiseError):
    """A model id is unknown, or its weights are missing, corrupt or unsafe."""


class DownloadError(ModelError):
    """Weights could not be downloaded; nothing was cached."""


class ConfigError(MRIDenoiseError, ValueError):
    """A training configuration is malformed or inconsistent (the message names the field)."""


class Cancelled(MRIDenoiseError):
    """The user cancelled the operation; nothing was written."""
