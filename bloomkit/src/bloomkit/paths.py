"""Refusals before any work: paths given on the command line that can never be used.

A run that trains for an hour and then finds that its output path is a regular file (or sits
under one) has wasted the hour; these checks cost a few `stat` calls and happen first. Each
raises a one-line `UsageError` (exit 2) naming the option and the path.
"""

from __future__ import annotations

from pathlib import Path

from bloomkit.errors import UsageError


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` that is not a directory (nothing can be made
    under it), or None."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_dir(path: Path, option: str) -> None:
    """`path` is, or can become, a directory: not a regular file, not under one."""
    if path.exists() and not path.is_dir():
        # --overwrite replaces a run's output directory; a file there is something else.
        raise UsageError(
            f"{option} '{path}' is a file, not a directory: remove it or choose another path"
        )
    blocker = _file_above(path)
    if blocker is not None:
        raise UsageError(f"{option} '{path}': '{blocker}' is a file, not a directory")


def check_output_file(path: Path, option: str) -> None:
    """`path` can be written as a file: not a directory, not under a regular file."""
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a directory: name a file in it")
    blocker = _file_above(path)
    if blocker is not None:
        raise UsageError(f"{option} '{path}': '{blocker}' is a file, not a directory")
