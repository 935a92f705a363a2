"""Errors a user can cause: printed as one line that says what to do, never a traceback."""


class UserError(Exception):
    """A mistake in the command line, the inputs or the environment that the user can fix."""


class RunFailed(UserError):
    """The run went through but its outputs failed a check, so nothing was published."""

    exit_code = 1
