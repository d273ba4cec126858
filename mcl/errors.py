"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class MclError(Exception):
    """A user-facing error (bad input, missing file, incompatible adapters)."""
