"""pyinfra's operation callbacks as stage events (gpurig.progress), for the live view and the run
file's stage seconds.

An operation's stage is its deploy's name, the part of its name before " | " (pyinfra prefixes
every operation of a @deploy so). When execution begins, every host's operations are known, so
each host's stages are announced as pending and a stage is done when its last operation on that
host ends. Preflight's work (facts, the plan) happens before execution, while pyinfra loads the
deploy file: preflight marks its own beginning and end.

`gpurig deploy` passes a pipe's descriptor in GPURIG_PROGRESS_FD; each event goes to it as one
JSON line. Without it (a bare `pyinfra` run) the events only feed the run file's seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from pyinfra.api.state import BaseStateCallback, State

from gpurig.progress import (
    DONE,
    ENV_PROGRESS_FD,
    FAILED,
    PENDING,
    RUNNING,
    Event,
    Progress,
    stage_of,
)

log = logging.getLogger(__name__)

Emit = Callable[[Event], None]


def pipe(fd: int) -> Emit:
    """Write each event to `fd` as one line; stop quietly once the reader has gone."""
    open_ = [True]

    def emit(event: Event) -> None:
        if not open_[0]:
            return
        try:
            # One write of one line (a pipe keeps writes under 4 KiB whole).
            os.write(fd, (event.to_json() + "\n").encode())
        except OSError as error:
            open_[0] = False
            log.debug("progress pipe closed: %s", error)

    return emit


def _names(state: State, op_hash: str) -> list[str]:
    return sorted(state.get_op_meta(op_hash).names)


class StageTracker(BaseStateCallback):
    """Counts each host's operations per stage; sends an event when a stage changes state."""

    def __init__(self, emit: Emit | None = None, clock: Callable[[], float] = time.time) -> None:
        self.progress = Progress()
        self._emit = emit
        self._clock = clock
        self._planned = False
        self._left: dict[tuple[str, str], int] = {}  # (host, stage): operations not ended
        self._busy: dict[tuple[str, str], float] = {}  # (host, stage): seconds in operations
        self._started: dict[tuple[str, str], float] = {}  # (host, op_hash): when it started

    def _send(
        self, host: str, stage: str, state: str, seconds: float | None = None, detail: str = ""
    ) -> None:
        event = Event(self._clock(), host, stage, state, seconds, detail)
        self.progress.apply(event)
        if self._emit is not None:
            self._emit(event)

    def _state(self, host: str, stage: str) -> str | None:
        run = self.progress.hosts.get(host)
        found = run.stages.get(stage) if run else None
        return found.state if found else None

    # Preflight, before execution.
    def begin(self, host: str, stage: str) -> None:
        self._send(host, stage, RUNNING)

    def end(self, host: str, stage: str, failure: str = "") -> None:
        run = self.progress.hosts[host].stages[stage]
        seconds = self._clock() - run.started if run.started is not None else None
        self._send(host, stage, FAILED if failure else DONE, seconds, failure)

    # Execution.
    def _plan(self, state: State) -> None:
        self._planned = True
        order = state.get_op_order()  # type: ignore[no-untyped-call]
        for host in state.inventory:
            ops = state.ops.get(host) or {}
            for op_hash in order:
                if op_hash not in ops:
                    continue
                key = (host.name, stage_of(_names(state, op_hash)[0]))
                self._left[key] = self._left.get(key, 0) + 1
                if self._state(*key) is None:
                    self._send(*key, PENDING)

    # pyinfra declares these static and calls them on the handler: bound methods keep count.
    def operation_start(self, state: State, op_hash: Any) -> None:  # type: ignore[override]
        if not self._planned:
            self._plan(state)

    def operation_host_start(  # type: ignore[override]
        self, state: State, host: Any, op_hash: Any
    ) -> None:
        if not self._planned:  # --no-wait runs start hosts without operation_start
            self._plan(state)
        if op_hash not in (state.ops.get(host) or {}):
            return  # pyinfra skips it on this host, and says nothing more of it
        self._started[(host.name, op_hash)] = self._clock()
        stage = stage_of(_names(state, op_hash)[0])
        if self._state(host.name, stage) == PENDING:
            self._send(host.name, stage, RUNNING)

    def operation_host_success(  # type: ignore[override]
        self, state: State, host: Any, op_hash: Any, retry_count: int = 0
    ) -> None:
        self._ended(state, host.name, op_hash, "")

    def operation_host_error(  # type: ignore[override]
        self, state: State, host: Any, op_hash: Any, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        self._ended(state, host.name, op_hash, f"failed at '{', '.join(_names(state, op_hash))}'")

    def _ended(self, state: State, host: str, op_hash: str, failure: str) -> None:
        started = self._started.pop((host, op_hash), None)
        key = (host, stage_of(_names(state, op_hash)[0]))
        if started is not None:
            self._busy[key] = self._busy.get(key, 0.0) + self._clock() - started
        self._left[key] = self._left.get(key, 1) - 1
        now = self._state(*key)
        if failure and now != FAILED:
            self._send(*key, FAILED, self._busy.get(key, 0.0), failure)
        elif not failure and now == RUNNING and self._left[key] <= 0:
            self._send(*key, DONE, self._busy.get(key, 0.0))

    def seconds(self, host: str) -> dict[str, float]:
        return self.progress.seconds(host)


@cache
def tracker() -> StageTracker:
    """This process's tracker: to the pipe `gpurig deploy` gave, if it gave one."""
    fd = os.environ.get(ENV_PROGRESS_FD, "")
    return StageTracker(pipe(int(fd)) if fd.isdigit() else None)
