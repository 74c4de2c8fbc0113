"""The models step (gpurig.plan.models) as pyinfra renders it: check, push what is missing
with progress, then the plan's script, which checks every pushed file by its hash.

A converged host costs one fact (the plan's `check` script) and reports no change. Files go
straight to the incoming folder as the SSH user over the open SFTP session (no copy through a
sudo temp file: a model is gigabytes), with a progress line for big files.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Generator
from typing import Any

from paramiko import SFTPClient
from pyinfra import logger
from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State
from pyinfra.context import host

from gpurig.plan.models import Models, ModelUpload, missing

BIG_BYTES = 64 << 20  # files from this size on get progress lines
PROGRESS_EVERY_S = 5.0


class ModelsCheck(FactBase[list[str]]):
    """The plan's check script's lines (gpurig.plan.models.missing reads them)."""

    def command(self, script: str) -> str:
        return script

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return list(output)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _progress(host: Host, label: str, size: int) -> Any:
    """An SFTP callback that logs how far a big file got, at most every few seconds."""
    started = last = time.monotonic()

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or done == total:
            last = now
            rate = done / max(now - started, 1e-6) / 1e6
            logger.info(
                f"{host.print_prefix}model push: {label} {done * 100 // max(total, 1)}% "
                f"of {_mb(size)} ({rate:.0f} MB/s)"
            )

    return report


def upload(state: State, host: Host, uploads: list[ModelUpload], incoming: str) -> bool:
    """Each file to incoming/<name> as the SSH user; the script checks it by hash next."""
    connect = getattr(host.connector, "get_file_transfer_connection", None)
    sftp = connect() if connect else None
    began = time.monotonic()
    for i, item in enumerate(uploads, 1):
        dest = f"{incoming}/{item.name}"
        logger.info(
            f"{host.print_prefix}model push {i}/{len(uploads)}: {item.label} ({_mb(item.size)})"
        )
        if isinstance(sftp, SFTPClient):
            big = item.size >= BIG_BYTES
            callback = _progress(host, item.label, item.size) if big else None
            sftp.put(item.src, dest, callback=callback, confirm=True)
        elif not host.put_file(item.src, dest):
            return False
    seconds = max(time.monotonic() - began, 1e-6)
    total = sum(u.size for u in uploads)
    logger.info(
        f"{host.print_prefix}model push: {len(uploads)} file(s), {_mb(total)} in "
        f"{seconds:.1f} s ({total / seconds / 1e6:.0f} MB/s)"
    )
    return True


@operation()
def placed(step: Models) -> Generator[Any, None, None]:
    needed = missing(host.get_fact(ModelsCheck, script=step.check))
    if not needed:
        host.noop(f"{len(step.models)} model(s) in {step.hub_dir} match their hashes")
        return
    names = {line.split()[1] for line in needed if line.startswith("need ") and " " in line}
    uploads = [u for u in step.uploads if u.name in names]
    if uploads:
        # Owned by the SSH user (sudo's SUDO_USER) so that SFTP writes there directly; the
        # script hands the files to the service user once their hashes are checked.
        incoming = shlex.quote(step.incoming)
        yield StringCommand(
            f'rm -rf {incoming} && install -d -m 0700 -o "${{SUDO_USER:-root}}" {incoming}'
        )
        yield FunctionCommand(upload, (uploads, step.incoming), {})
    yield step.script
