"""What a person sees of a deploy's progress: a live table on a terminal, plain lines elsewhere.

The live view is one row per host and one column per stage: a stage that ended shows its
seconds, the running one counts up, a failed one is red. Not on a terminal (a CI log, a pipe),
each stage transition is one line with the seconds since the run started, so a log reads as a
timeline:

    [+  4.1s] gpu-1 system: started
    [+ 12.6s] gpu-1 system: done in 8.5 s

pyinfra's own output goes through the view as it is: above the live table, or between lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gpurig.progress import DONE, FAILED, PENDING, RUNNING, Event, Progress

Clock = Callable[[], float]


def line(event: Event, since: float) -> str | None:
    """The plain line of one transition; None for a stage only announced as pending."""
    at = f"[+{max(0.0, event.t - since):6.1f}s] {event.host} {event.stage}:"
    seconds = f"{event.seconds:.1f} s" if event.seconds is not None else "? s"
    if event.state == RUNNING:
        return f"{at} started"
    if event.state == DONE:
        return f"{at} done in {seconds}"
    if event.state == FAILED:
        why = f": {event.detail}" if event.detail else ""
        return f"{at} FAILED after {seconds}{why}"
    return None


_CELL = {
    PENDING: ("·", "dim"),
    RUNNING: ("▶", "bold yellow"),
    DONE: ("✓", "green"),
    FAILED: ("✗", "bold red"),
}


def table(progress: Progress, now: float, since: float) -> Table:
    """The live view at `now`: hosts down, stages across, seconds in the cells."""
    stages = progress.stages()
    out = Table(
        title=f"gpurig deploy: {len(progress.hosts)} host(s), {max(0.0, now - since):.0f} s",
        title_justify="left",
        header_style="bold",
    )
    out.add_column("host", no_wrap=True)
    for stage in stages:
        out.add_column(stage, justify="right", no_wrap=True)
    out.add_column("now", no_wrap=True)
    for name in sorted(progress.hosts):
        host = progress.hosts[name]
        cells: list[Text | str] = [name]
        for stage in stages:
            run = host.stages.get(stage)
            if run is None:
                cells.append("")
                continue
            mark, style = _CELL[run.state]
            elapsed = run.elapsed(now)
            cells.append(Text(f"{mark} {elapsed:.1f}" if elapsed is not None else mark, style))
        current = host.current()
        if current:
            run = host.stages[current]
            said = current if run.state == RUNNING else run.detail or f"{current} failed"
            cells.append(Text(said, _CELL[run.state][1]))
        else:
            finished = all(s.state == DONE for s in host.stages.values())
            cells.append(Text("finished", "green") if finished else "")
        out.add_row(*cells)
    return out


class PlainView:
    """One line per stage transition; pyinfra's lines pass through unchanged."""

    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, clock: Clock = time.time
    ) -> None:
        self.progress = Progress()
        self.since = clock()
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self._out.flush()

    def event(self, event: Event) -> None:
        self.progress.apply(event)
        text = line(event, self.since)
        if text:
            self._out.write(text + "\n")
            self._out.flush()

    def output(self, text: str, err: bool = False) -> None:
        stream = self._err if err else self._out
        stream.write(text + "\n")
        stream.flush()

    def tick(self) -> None:
        """Nothing moves between lines."""


class LiveView:
    """The table, redrawn in place; pyinfra's lines scroll above it."""

    def __init__(self, console: Console, clock: Clock = time.time) -> None:
        self.progress = Progress()
        self.since = clock()
        self._clock = clock
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def _render(self) -> Table:
        return table(self.progress, self._clock(), self.since)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        self._live.update(self._render(), refresh=True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._live.update(self._render(), refresh=True)  # the last state stays on screen
        self._live.__exit__(kind, value, traceback)

    def event(self, event: Event) -> None:
        self.progress.apply(event)
        self.tick()

    def output(self, text: str, err: bool = False) -> None:
        self._live.console.print(Text.from_ansi(text), soft_wrap=True)

    def tick(self) -> None:
        self._live.update(self._render(), refresh=True)


def view(console: Console) -> LiveView | PlainView:
    """Live on a terminal, plain lines anywhere else."""
    return LiveView(console) if console.is_terminal else PlainView()
