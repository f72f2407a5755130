"""The one exception type the CLI turns into a one-line error message."""


class PipelineError(Exception):
    """A problem with the user's input (files, options, checkpoints): shown as one line, exit 1."""
