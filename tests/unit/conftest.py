"""Fixtures unit test files share: the repository's own spec and lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpurig import lock, spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> spec.Stack:
    """stack.yml as committed (a test file may define its own `stack` instead)."""
    return spec.load(REPO / "stack.yml")


@pytest.fixture(scope="module")
def locked() -> lock.Lock:
    """The committed lock."""
    return lock.load(REPO / "lock")
