"""The project's user-facing error types.

Every error a user can cause (a bad config, a missing or corrupt file, a checkpoint
that does not fit the model) is one of these, with a message that names what is wrong
and where. Programming errors stay ordinary Python exceptions.
"""


class SignLanguageError(Exception):
    """Base class of the errors this project raises for bad input."""


class ConfigurationError(SignLanguageError):
    """A config file (or override) is invalid: names the file, the dotted key and what was expected."""


class DataError(SignLanguageError):
    """A data file (annotations, frames, keypoints, vocabulary) is missing or corrupt: names the path."""


class CheckpointError(SignLanguageError):
    """A checkpoint is missing, corrupt, or does not match the model: names the path and the keys."""
