"""`python -m bloomkit.warm`: import what `bloomkit smoke` imports, so that its bytecode exists.

A deployed venv is root's, and read-only to the service user that runs the smoke: Python cannot
write that user's bytecode into it, so each smoke compiled the ~1,100 modules it imports beyond
the install's import check (torch's dynamo and sympy, transformers' BLOOM and generation, ...)
in memory, on every run. gpurig's verify step runs this module as root, once per venv, beside
the first smoke (on a core the smoke leaves idle): later smokes find those modules compiled.
It only imports; nothing runs. tests/test_warm.py holds SMOKE_MODULES to what the smoke loads.

`--beside-check`: most of that bytecode, written earlier. gpurig's venv build runs it beside
the import check, on the core the check leaves idle, before the venv goes live: without
importing torch (the check is compiling torch's own modules meanwhile) it imports sympy and
compiles the package folders the smoke mostly imports. The first smoke then starts with ~90%
of its modules compiled; the warm-up beside it writes the rest.
"""

from __future__ import annotations

import compileall
import importlib
import sys
import sysconfig
from pathlib import Path
from py_compile import PycInvalidationMode

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

# Imported beside the check: pure Python that imports no torch. sympy's folder is three times
# what it imports, so it is imported (its bytecode written as it goes), not compiled whole.
BESIDE_CHECK_IMPORTS = ("sympy",)
# Compiled beside the check (site-packages-relative; a trailing "/" means that folder's own
# files only): folders of which the smoke imports half or more (tests/test_warm.py holds it).
BESIDE_CHECK_FOLDERS = (
    "torch/_dynamo",
    "torch/distributed",
    "torch/onnx",
    "torch/_numpy",
    "transformers/",
    "transformers/generation",
    "transformers/integrations",
    "transformers/quantizers",
    "transformers/loss",
    "transformers/distributed",
    "transformers/models/bloom",
    "accelerate",
    "psutil",
    "bloomkit",
)


def folders(site_packages: Path) -> list[tuple[Path, int | None]]:
    """BESIDE_CHECK_FOLDERS as (folder, compileall's maxlevels) under `site_packages`."""
    return [
        (site_packages / name.rstrip("/"), 0 if name.endswith("/") else None)
        for name in BESIDE_CHECK_FOLDERS
    ]


def beside_check() -> int:
    for name in BESIDE_CHECK_IMPORTS:
        importlib.import_module(name)
    # Timestamp pycs, as the imports write them (SOURCE_DATE_EPOCH would make them hashed).
    mode = PycInvalidationMode.TIMESTAMP
    site_packages = Path(sysconfig.get_paths()["purelib"])
    ok = True
    for folder, levels in folders(site_packages):
        if folder.is_dir():  # a folder a later release dropped is skipped
            ok &= compileall.compile_dir(folder, maxlevels=levels, quiet=2, invalidation_mode=mode)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--beside-check"]:
        return beside_check()
    if args:
        print("usage: python -m bloomkit.warm [--beside-check]", file=sys.stderr)
        return 2
    for name in SMOKE_MODULES:
        importlib.import_module(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
