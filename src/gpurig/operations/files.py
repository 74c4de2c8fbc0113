"""Files from the controller: config files with a follow-up command."""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from io import BytesIO
from pathlib import Path
from typing import Any

from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.digests import file_digest
from gpurig.facts.system import FileState


@operation()
def installed(
    src: bytes | Path,
    dest: str,
    mode: str = "644",
    owner: str = "root:root",
    then: str | None = None,
    sha256: str | None = None,
) -> Generator[Any, None, None]:
    """`dest` holds `src` (bytes, or a controller file) with this mode and owner; `then` runs
    after its content changed.

    One fact and one operation: unlike files.put followed by an `_if=...did_change` command,
    a dry run can tell whether `then` will run.
    """
    current = host.get_fact(FileState, path=dest)
    digest = sha256 or (
        file_digest(src) if isinstance(src, Path) else hashlib.sha256(src).hexdigest()
    )
    new_content = current is None or current.sha256 != digest
    commands: list[Any] = []
    if new_content:
        commands.append(StringCommand("mkdir", "-p", str(Path(dest).parent)))
        upload = str(src) if isinstance(src, Path) else BytesIO(src)
        commands.append(
            FileUploadCommand(upload, dest, remote_temp_filename=host.get_temp_filename(dest))
        )
    if new_content or current is None or current.mode != mode.lstrip("0"):
        commands.append(StringCommand("chmod", mode, dest))
    if new_content or current is None or current.owner != owner:
        commands.append(StringCommand("chown", owner, dest))
    if not commands:
        host.noop(f"{dest} is up to date")
        return
    yield from commands
    if new_content and then:
        yield then
