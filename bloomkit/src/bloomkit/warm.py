"""`python -m bloomkit.warm`: the bytecode of what `bloomkit smoke` imports beyond the check.

A deployed venv is root's, and read-only to the service user that runs the smoke: Python cannot
write that user's bytecode into it, so without this each smoke compiled in memory, on every
run, the ~1,100 modules it imports beyond gpurig's import check (torch's dynamo, sympy,
transformers' BLOOM and generation, ...). gpurig's venv build runs this as root beside that
check, on the core the check leaves idle, before the venv goes live.

It compiles the source files listed in warm_files.txt (site-packages-relative), recorded from
a real smoke of the locked versions: exactly what the smoke loads and the check does not, so
that neither compiles the other's modules, and nothing is compiled in vain. It imports nothing
(torch least of all: the check is compiling torch's own modules meanwhile) and runs nothing
else. A file a release dropped is skipped; one it added is compiled in memory by the smoke, as
before. tests/test_warm.py holds the list to a real smoke, and records it again on request.
"""

from __future__ import annotations

import compileall
import sys
import sysconfig
from importlib import resources
from pathlib import Path
from py_compile import PycInvalidationMode

LIST = "warm_files.txt"


def listed() -> list[str]:
    return resources.files("bloomkit").joinpath(LIST).read_text().split()


def main(argv: list[str] | None = None) -> int:
    if sys.argv[1:] if argv is None else argv:
        print("usage: python -m bloomkit.warm", file=sys.stderr)
        return 2
    site = Path(sysconfig.get_paths()["purelib"])
    # Timestamp pycs, as imports write them (SOURCE_DATE_EPOCH would make them hashed).
    mode = PycInvalidationMode.TIMESTAMP
    ok = True
    for name in listed():
        path = site / name
        if path.is_file():
            ok &= bool(compileall.compile_file(path, quiet=2, invalidation_mode=mode))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
