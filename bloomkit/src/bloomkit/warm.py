"""`python -m bloomkit.warm`: the bytecode of most of what `bloomkit smoke` imports.

A deployed venv is root's, and read-only to the service user that runs the smoke: Python cannot
write that user's bytecode into it, so without this each smoke compiled in memory, on every
run, the ~1,100 modules it imports beyond gpurig's import check (torch's dynamo and sympy,
transformers' BLOOM and generation, ...). gpurig's venv build runs this as root beside that
check, on the core the check leaves idle, before the venv goes live. It never imports torch
(the check is compiling torch's own modules meanwhile): it imports sympy, and compiles the
package folders the smoke mostly imports. It runs nothing else. tests/test_warm.py holds the
lists to what a real smoke loads.
"""

from __future__ import annotations

import compileall
import importlib
import sys
import sysconfig
from pathlib import Path
from py_compile import PycInvalidationMode

# Imported: pure Python that imports no torch. sympy's folder is three times what it imports,
# so it is imported (its bytecode written as it goes), not compiled whole.
IMPORTS = ("sympy",)
# Compiled (site-packages-relative; a trailing "/" means that folder's own files only):
# folders of which the smoke imports half or more.
FOLDERS = (
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
    """FOLDERS as (folder, compileall's maxlevels: None for the whole tree)."""
    return [
        (site_packages / name.rstrip("/"), 0 if name.endswith("/") else None) for name in FOLDERS
    ]


def main(argv: list[str] | None = None) -> int:
    if sys.argv[1:] if argv is None else argv:
        print("usage: python -m bloomkit.warm", file=sys.stderr)
        return 2
    for name in IMPORTS:
        importlib.import_module(name)
    # Timestamp pycs, as imports write them (SOURCE_DATE_EPOCH would make them hashed).
    mode = PycInvalidationMode.TIMESTAMP
    ok = True
    for folder, levels in folders(Path(sysconfig.get_paths()["purelib"])):
        if folder.is_dir():  # a folder a later release dropped is skipped
            ok &= compileall.compile_dir(folder, maxlevels=levels, quiet=2, invalidation_mode=mode)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
