"""The one exception type a user sees: a message they can act on, printed as one line."""


class StreamFerError(Exception):
    """An error caused by input or environment, reported as a single line with a non-zero exit."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
