"""One exception family for every user-facing failure.

The CLI catches :class:`MedexportError` and prints its message on one line; anything else is a bug.
"""


class MedexportError(Exception):
    """Base of every error a user can cause or fix (bad input, missing backend, broken guard rail)."""


class InputError(MedexportError):
    """A path, flag, shape or option the user gave is wrong."""


class ModelLoadError(MedexportError):
    """A model, checkpoint or ONNX file cannot be loaded safely."""


class DataError(MedexportError):
    """Images for calibration or validation are missing, unreadable or do not fit the model."""


class BackendUnavailableError(MedexportError):
    """An optional backend is not installed; the message names the extra to install."""


class ExportError(MedexportError):
    """Torch to ONNX conversion or the ONNX checker failed."""


class ParityError(MedexportError):
    """A converted artifact disagrees numerically with its source beyond the tolerance."""


class GuardRailError(MedexportError):
    """A clinical guard rail (overall or per-class metric drop) was broken."""


class DataWarning(UserWarning):
    """Images were usable but not all of them (files skipped, with reasons); the CLI prints it on one line."""
