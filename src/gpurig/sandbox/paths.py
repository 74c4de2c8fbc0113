"""Where the sandbox keeps its state: one engine per machine, one fleet per state dir."""

from __future__ import annotations

import os
from pathlib import Path


def state_home() -> Path:
    """$XDG_STATE_HOME/gpurig, falling back to ~/.local/state/gpurig as the XDG spec says."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpurig"


def engine_dir() -> Path:
    return Path(os.environ.get("GPURIG_ENGINE_DIR") or state_home() / "engine").absolute()


def sandbox_dir() -> Path:
    return Path(os.environ.get("GPURIG_SANDBOX_DIR") or state_home() / "sandbox").absolute()


def cache_home() -> Path:
    """$XDG_CACHE_HOME/gpurig: things safe to delete (debootstrap's downloaded packages)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpurig"
