"""The models step (gpurig.plan.models) as pyinfra renders it: check, push what is missing
with progress, then the plan's script, which places every pushed file once its hash is checked.

A converged host costs one fact (the plan's `check` script) and reports no change. Each file is
streamed over its own exec channel of the open SSH connection into the plan's `receive` script
(as root, into root's incoming folder): the host writes it and hashes the same bytes in one
pass, so the placing script need not read it again; a progress line for big files. Measured
against paramiko's SFTP and a second read on the host: as fast on this 2-core machine, where
CPU is the limit (docs/BENCHMARKS.md, model push); one read less of every file on the host.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Generator
from typing import Any

from paramiko import Transport
from pyinfra import logger
from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State
from pyinfra.context import host

from gpurig.operations.stream import stream, transport_of, what_host_read
from gpurig.plan.models import Models, ModelUpload, missing, receive

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
    """A callback that logs how far a big file got, at most every few seconds."""
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


def _stream(transport: Transport, item: ModelUpload, incoming: str, report: Any) -> str | None:
    """One file into `receive`: written and hashed on the host in one pass. None when the host
    found the blob's hash; else what went wrong."""
    sent = (lambda done: report(done, item.size)) if report else None
    status, out, err = stream(transport, item.src, receive(item, incoming), sent)
    if status == 0 and out == item.blob:
        return None
    return what_host_read(status, out, err)


def upload(state: State, host: Host, uploads: list[ModelUpload], incoming: str) -> bool:
    """Each file to incoming/<name>, hashed on the host as it lands; the script places it."""
    transport = transport_of(host)
    began = time.monotonic()
    for i, item in enumerate(uploads, 1):
        logger.info(
            f"{host.print_prefix}model push {i}/{len(uploads)}: {item.label} ({_mb(item.size)})"
        )
        if transport is None:  # another connector: its own copy; the script hashes the file
            if not host.put_file(item.src, f"{incoming}/{item.name}"):
                return False
            continue
        big = item.size >= BIG_BYTES
        problem = _stream(
            transport, item, incoming, _progress(host, item.label, item.size) if big else None
        )
        if problem:
            logger.error(
                f"{host.print_prefix}model push: {item.label} (blob {item.blob}): {problem}"
            )
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
        # Root's, as the Ansible roles make it; the script hands the files to the service
        # user once their hashes are checked.
        incoming = shlex.quote(step.incoming)
        yield StringCommand(f"rm -rf {incoming} && install -d -m 0700 -o root -g root {incoming}")
        yield FunctionCommand(upload, (uploads, step.incoming), {})
    yield step.script
