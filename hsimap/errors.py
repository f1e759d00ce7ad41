"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class HsimapError(Exception):
    """An error the user can act on: bad input, a mismatch, an existing output.

    The message says what is wrong and what to do, on one line.
    """
