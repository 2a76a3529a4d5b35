"""The project's own errors: each carries a one-line message that names the culprit and what is valid."""


class PipelineError(Exception):
    """Base class; stage entry points print these as one line instead of a traceback."""


class ConfigError(PipelineError, ValueError):
    """A config value (or builder argument) that cannot work; the message names the key and what is valid."""


class DataError(PipelineError, ValueError):
    """Input data that cannot be used; the message names the file or folder at fault."""


class TrainingError(PipelineError):
    """Training that cannot go on (e.g. a NaN loss); the message says where it stopped and what was kept."""
