"""Run pyinfra with a progress pipe, and show its stage events as they come (gpurig.progress_view).

pyinfra's stdout and stderr come back through this process line by line, so its lines and the
view's never cut into each other (and a live table is not overwritten). Three reader threads
feed one queue; only the main thread draws.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
from typing import IO

from rich.console import Console

from gpurig.progress import ENV_PROGRESS_FD, Event
from gpurig.progress_view import LiveView, PlainView, view

log = logging.getLogger(__name__)

EVENTS, OUT, ERR = "events", "out", "err"
REDRAW_S = 0.25  # how often a running stage's seconds move on the live view

Item = tuple[str, str | None]  # (stream, line); None: the stream has ended


def _read(stream: IO[bytes], name: str, items: queue.Queue[Item]) -> None:
    try:
        for raw in stream:
            items.put((name, raw.decode(errors="replace").rstrip("\r\n")))
    finally:
        stream.close()
        items.put((name, None))


def _show(shown: LiveView | PlainView, name: str, text: str) -> None:
    if name != EVENTS:
        shown.output(text, err=name == ERR)
        return
    try:
        shown.event(Event.from_json(text))
    except ValueError as error:  # a torn line must not stop the run
        log.debug("progress: %s", error)


def run_pyinfra(command: list[str], env: dict[str, str], console: Console) -> int:
    """pyinfra's exit code, its run shown live on a terminal and as plain lines elsewhere."""
    read_fd, write_fd = os.pipe()
    env = {**env, ENV_PROGRESS_FD: str(write_fd), "PYTHONUNBUFFERED": "1"}
    try:
        process = subprocess.Popen(
            command,
            env=env,
            pass_fds=(write_fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_fd)  # the child holds the only writer: its exit ends the stream
    assert process.stdout is not None
    assert process.stderr is not None
    items: queue.Queue[Item] = queue.Queue()
    streams = {
        EVENTS: os.fdopen(read_fd, "rb"),
        OUT: process.stdout,
        ERR: process.stderr,
    }
    for name, stream in streams.items():
        threading.Thread(target=_read, args=(stream, name, items), daemon=True).start()
    open_streams = len(streams)
    try:
        with view(console) as shown:
            while open_streams:
                try:
                    name, text = items.get(timeout=REDRAW_S)
                except queue.Empty:
                    shown.tick()
                    continue
                if text is None:
                    open_streams -= 1
                else:
                    _show(shown, name, text)
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached pyinfra too: let it stop, then stop here.
        process.wait(timeout=30)
        raise
    return process.wait()
