"""bloomkit: fine-tune, generate and smoke-test Hugging Face causal LMs on a GPU host.

The host half of gpurig: it imports nothing of the controller, which reads only its JSON report.
"""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("bloomkit")
except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH=src)
    __version__ = "0.1.0+src"

__all__ = ["__version__"]
