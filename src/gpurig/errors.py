"""Errors the CLI turns into one line and an exit code, never a traceback."""


class GpurigError(Exception):
    """A problem the user can fix; the message names it and says how."""

    exit_code = 1


class UsageError(GpurigError):
    """Bad input: a spec, a flag, an inventory."""

    exit_code = 2
