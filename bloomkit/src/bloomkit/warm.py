"""`python -m bloomkit.warm`: import what `bloomkit smoke` imports, so that its bytecode exists.

A deployed venv is root's, and read-only to the service user that runs the smoke: Python cannot
write that user's bytecode into it, so each smoke compiled the ~1,100 modules it imports beyond
the install's import check (torch's dynamo and sympy, transformers' BLOOM and generation, ...)
in memory, on every run. gpurig's verify step runs this module as root, once per venv, beside
the first smoke (on a core the smoke leaves idle): later smokes find those modules compiled.
It only imports; nothing runs. tests/test_warm.py holds SMOKE_MODULES to what the smoke loads.
"""

from __future__ import annotations

import importlib

# The smoke's own modules and the lazy imports of its LLM stage (models, llmcheck, generate).
SMOKE_MODULES = (
    "bloomkit.smoke",
    "bloomkit.llmcheck",
    "bloomkit.generate",
    "bloomkit.models",
    "bloomkit.env",
    "tokenizers",
    "transformers.models.bloom.modeling_bloom",
    "transformers.generation.streamers",
)


def main() -> int:
    for name in SMOKE_MODULES:
        importlib.import_module(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
