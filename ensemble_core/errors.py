"""Errors a user can fix, each with a message that names the problem and the fix."""


class EnsembleError(Exception):
    """A problem the user can fix: the CLI prints its message alone, without a traceback."""


class ConfigError(EnsembleError):
    """A rules or ensemble file that cannot be read or does not validate."""


class MemberError(EnsembleError):
    """A member (queue) that cannot be reached or used as configured."""
