"""The one exception type a user sees: a message they can act on, printed as one line."""


class StreamFerError(Exception):
    """An error caused by input or environment, reported as a single line with a non-zero exit."""

    exit_code = 2
