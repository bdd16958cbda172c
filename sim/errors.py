"""The errors convcore reports to its user as one line, ``convcore: error: ...``.

The lowest module of the host side: the backends raise them, the command line catches them.
"""

__all__ = ["CliError", "BackendUnavailable", "CheckMismatch"]


class CliError(Exception):
    """A user error the command line reports as one line."""


class BackendUnavailable(CliError):
    """The chosen backend cannot run here (not built yet, simulator missing, ...)."""


class CheckMismatch(CliError):
    """--check: a layer's output differs from the golden model."""
