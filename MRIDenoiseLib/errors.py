"""Errors a user can act on, shown as one line by the CLI and the Slicer module."""


class MRIDenoiseError(Exception):
    """A problem with the user's input, settings or environment (not a bug in this library)."""


class InputError(MRIDenoiseError):
    """The input volume or file cannot be denoised as it is."""


class OutputError(MRIDenoiseError):
    """An output could not be written completely (disk full, permissions); nothing was left behind."""


class ModelError(MRIDenoiseError):
    """A model id is unknown, or its weights are missing, corrupt or unsafe."""


class DownloadError(ModelError):
    """Weights could not be downloaded; nothing was cached."""


class Cancelled(MRIDenoiseError):
    """The user cancelled the operation; nothing was written."""
