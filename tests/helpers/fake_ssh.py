"""An SSH transport whose exec channels run their command here (as whoever runs the tests) on
the bytes sent to them: the streamed pushes' host-side scripts, tested without a host."""

from __future__ import annotations

import io
import subprocess
from typing import Any


class FakeChannel:
    def __init__(self) -> None:
        self.command = ""
        self.sent = b""
        self.done: subprocess.CompletedProcess[bytes] | Any = None

    def exec_command(self, command: str) -> None:
        self.command = command

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        self.done = subprocess.run(
            ["/bin/sh", "-c", self.command], input=self.sent, capture_output=True, timeout=60
        )

    def makefile(self, _: str) -> io.BytesIO:
        return io.BytesIO(self.done.stdout)

    def makefile_stderr(self, _: str) -> io.BytesIO:
        return io.BytesIO(self.done.stderr)

    def recv_exit_status(self) -> int:
        return int(self.done.returncode)

    def close(self) -> None:
        pass


class FakeTransport:
    def open_session(self) -> FakeChannel:
        return FakeChannel()
