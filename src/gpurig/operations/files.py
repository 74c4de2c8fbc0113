"""Files from the controller: config files with a follow-up command.

Over SSH a new content goes in one round trip (gpurig.operations.stream): streamed into a
root-run script that writes a 0600 temporary file beside the destination, hashes the same
bytes, gives it its mode and owner and renames it over the destination only with the expected
hash. pyinfra's sudo upload takes six (mkdir, an SFTP put to /tmp, cp, rm, chmod, chown) and
writes the destination in place, so a reader can meet half a file. Another connector gets
pyinfra's upload.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Generator
from io import BytesIO
from pathlib import Path
from typing import Any

from pyinfra import logger
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.exceptions import OperationError
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State
from pyinfra.context import host
from pyinfra.facts.files import Directory

from gpurig.digests import file_digest
from gpurig.facts.system import FileState
from gpurig.operations.early import Push, Transfer, send
from gpurig.operations.stream import transport_of
from gpurig.plan.hashing import tee_hashed


def receive(dest: str, mode: str, owner: str, sha256: str) -> str:
    """The host's side, run as root: stdin into a 0600 temporary file in `dest`'s folder,
    hashed as it is written; only with `sha256` does it get `mode` and `owner` and replace
    `dest` (rename(2); `mv -T`: never into a folder of that name). Prints the hash it read."""
    q = shlex.quote
    folder, name = posixpath.split(dest)
    return (
        f"umask 022; mkdir -p {q(folder)} || exit 1; "
        f"t=$(mktemp {q(f'{folder}/.{name}.gpurig-XXXXXX')}) || exit 1; "
        + tee_hashed('"$t"')
        + f'if [ "$h" = {sha256} ] && chmod {q(mode)} "$t" && chown {q(owner)} "$t" '
        f'&& mv -fT "$t" {q(dest)}; then exit 0; fi; rm -f "$t"; exit 1'
    )


def transfer(src: str | bytes, dest: str, mode: str, owner: str, sha256: str) -> Transfer:
    """`src` (a controller file's path, or the bytes) streamed into `receive`: by preflight's
    background push (gpurig.operations.early), or by `put`."""
    size = len(src) if isinstance(src, bytes) else Path(src).stat().st_size
    return Transfer(dest, src, size, sha256, receive(dest, mode, owner, sha256))


def put(
    state: State,
    host: Host,
    src: bytes | Path,
    dest: str,
    mode: str,
    owner: str,
    sha256: str,
    early: Push | None = None,
) -> bool:
    """`receive` over the host's SSH connection, or the outcome of `early`'s push of `dest`
    (pushed again when that failed); False names the failure. (pyinfra passes `state` and
    `host` by these names.)"""
    if early is not None and dest in early:
        problem = early.outcome(dest)
        if problem is None:
            return True
        logger.warning(f"{host.print_prefix}{dest}: {problem}; again")
    transport = transport_of(host)
    assert transport is not None  # the operation chose this path for an SSH connection
    data = src if isinstance(src, bytes) else str(src)
    problem = send(transport, transfer(data, dest, mode, owner, sha256))
    if problem is not None:
        logger.error(f"{host.print_prefix}{dest}: {problem}")
    return problem is None


@operation()
def installed(
    src: bytes | Path,
    dest: str,
    mode: str = "644",
    owner: str = "root:root",
    then: str | None = None,
    sha256: str | None = None,
    early: Push | None = None,
) -> Generator[Any, None, None]:
    """`dest` holds `src` (bytes, or a controller file) with this mode and owner; `then` runs
    after its content changed. `early`: the push preflight started, which may be placing `dest`
    (its probe found it missing or different): this waits for that, whatever the file is now.

    One fact and one operation: unlike files.put followed by an `_if=...did_change` command,
    a dry run can tell whether `then` will run.
    """
    digest = sha256 or (
        file_digest(src) if isinstance(src, Path) else hashlib.sha256(src).hexdigest()
    )
    if early is not None and dest in early:
        yield FunctionCommand(put, (src, dest, mode, owner, digest), {"early": early})
        if then:
            yield then
        return
    current = host.get_fact(FileState, path=dest)
    new_content = current is None or current.sha256 != digest
    commands: list[Any] = []
    if new_content and transport_of(host) is not None:
        yield FunctionCommand(put, (src, dest, mode, owner, digest), {})
        if then:
            yield then
        return
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


@operation()
def folder(path: str, owner: str, group: str, mode: str) -> Generator[Any, None, None]:
    """`path` is a folder (made with its parents) with this owner, group and mode, in one
    command where pyinfra's files.directory sends mkdir, chmod and chown one by one."""
    info = host.get_fact(Directory, path=path)
    if info is False:
        raise OperationError(f"{path} exists and is not a folder: move it aside")
    q = shlex.quote(path)
    owned, wanted = f"{owner}:{group}", int(mode, 8)
    commands = [] if info else [f"mkdir -p {q}"]
    if not info or (info["user"], info["group"]) != (owner, group):
        commands.append(f"chown {shlex.quote(owned)} {q}")
    if not info or int(str(info["mode"]), 8) != wanted:
        commands.append(f"chmod {wanted:o} {q}")
    if not commands:
        host.noop(f"folder {path} is in place")
        return
    yield " && ".join(commands)
