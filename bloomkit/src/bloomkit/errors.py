"""The one exception type the CLI turns into a single line and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class BloomkitError(Exception):
    """A failure the user can act on: `main()` prints its one-line message, no traceback."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str) -> None:
        # One line, whatever the caller passed: the message is what a fleet report shows.
        super().__init__(" ".join(str(message).split()))


class UsageError(BloomkitError):
    """Bad arguments (the same exit code argparse uses)."""

    exit_code = EXIT_USAGE


class GPUOutOfMemory(BloomkitError):
    """torch.OutOfMemoryError, told as which step ran out and what to lower."""

    def __init__(self, where: str, advice: str) -> None:
        super().__init__(f"out of GPU memory in {where}: {advice}")
