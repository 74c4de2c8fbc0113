"""A deploy's progress: pyinfra's operation callbacks -> stage events -> per-host stage state,
shown as plain lines off a terminal and as a live table on one."""

from __future__ import annotations

import io
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from gpurig import progress_view
from gpurig.commands import deploy_watch
from gpurig.deploys.cluster import cluster_node
from gpurig.deploys.nvidia import nvidia_driver
from gpurig.deploys.preflight import preflight
from gpurig.deploys.progress import StageTracker, pipe
from gpurig.deploys.stages import llm_env, python, system
from gpurig.deploys.verify import verify
from gpurig.progress import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    STAGE_OF_DEPLOY,
    Event,
    Progress,
    stage_of,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_every_deploy_of_the_pyinfra_front_end_has_a_stage() -> None:
    for function in (preflight, system, python, nvidia_driver, llm_env, cluster_node, verify):
        assert function.deploy_name in STAGE_OF_DEPLOY  # type: ignore[attr-defined]
    assert stage_of("LLM environment | Install the locked venv (cpu-cp311)") == "llm_env"
    assert stage_of("NVIDIA driver | Hold the driver") == "driver"
    assert stage_of("Something new | x") == "something_new"


def test_events_round_trip_and_junk_is_refused() -> None:
    event = Event(12.5, "gpu-1", "system", FAILED, 3.25, "failed at 'System | Install CA'")
    assert Event.from_json(event.to_json()) == event
    junk = ('{"state": "exploded", "t": 1, "host": "a", "stage": "b"}', "[1]", "{")
    for line in (*junk, '{"state": "done", "t": 1}'):
        with pytest.raises(ValueError, match="not a progress event"):
            Event.from_json(line)


def test_events_become_each_hosts_stages_with_their_seconds() -> None:
    progress = Progress()
    progress.apply(Event(100.0, "a", "preflight", RUNNING))
    progress.apply(Event(101.5, "a", "preflight", DONE))  # no seconds given: from the clock
    progress.apply(Event(102.0, "a", "verify", PENDING))
    progress.apply(Event(102.0, "a", "system", PENDING))
    progress.apply(Event(102.0, "a", "system", RUNNING))
    progress.apply(Event(102.0, "b", "system", RUNNING))
    progress.apply(Event(109.0, "b", "system", FAILED, 6.0, "failed at 'System | Install apt'"))
    progress.apply(Event(110.0, "a", "system", PENDING))  # late announcement: changes nothing
    a, b = progress.hosts["a"], progress.hosts["b"]
    assert a.stages["preflight"].state == DONE
    assert a.stages["system"].state == RUNNING
    assert a.current() == "system"
    assert a.stages["system"].elapsed(now=105.25) == 3.25  # counting while it runs
    assert a.stages["verify"].elapsed(now=105.25) is None  # not started
    assert b.current() == "system"
    assert b.stages["system"].detail == "failed at 'System | Install apt'"
    assert progress.stages() == ["preflight", "system", "verify"]  # the deploy's order
    assert progress.seconds("a") == {"preflight": 1.5}  # only what ended
    assert progress.seconds("b") == {"system": 6.0}


# --- the tracker, fed as pyinfra feeds it ------------------------------------------------------


@dataclass(frozen=True)
class Host:
    name: str


@dataclass
class State:
    """What the tracker reads of pyinfra's State: the op order, each host's ops, op names."""

    order: list[str]
    ops: dict[Host, dict[str, Any]]
    names: dict[str, str] = field(default_factory=dict)

    @property
    def inventory(self) -> list[Host]:
        return list(self.ops)

    def get_op_order(self) -> list[str]:
        return self.order

    def get_op_meta(self, op_hash: str) -> Any:
        return SimpleNamespace(names={self.names[op_hash]})


def test_the_tracker_turns_operations_into_stages_timed_by_the_hosts_own_work() -> None:
    clock = Clock()
    sent: list[Event] = []
    tracker = StageTracker(sent.append, clock)
    a, b = Host("a"), Host("b")
    names = {
        "ca": "System | Install CA",
        "apt": "System | Install apt packages",
        "venv": "LLM environment | Install the locked venv",
        "smoke": "Verify | Run bloomkit smoke",
    }
    state = State(
        list(names),
        {a: dict.fromkeys(names), b: {"ca": None, "apt": None, "venv": None}},  # b: no smoke
        names,
    )
    tracker.begin("a", "preflight")
    clock.now += 2.0
    tracker.end("a", "preflight")
    # The first operation: every host's stages are announced.
    tracker.operation_start(state, "ca")  # type: ignore[arg-type]
    assert {(e.host, e.stage) for e in sent if e.state == PENDING} == {
        ("a", "system"), ("a", "llm_env"), ("a", "verify"), ("b", "system"), ("b", "llm_env"),
    }  # fmt: skip
    for op_hash, seconds in (("ca", 1.0), ("apt", 4.0)):
        tracker.operation_host_start(state, a, op_hash)  # type: ignore[arg-type]
        tracker.operation_host_start(state, b, op_hash)  # type: ignore[arg-type]
        clock.now += seconds
        tracker.operation_host_success(state, a, op_hash)  # type: ignore[arg-type]
        clock.now += 10.0  # a waits while b is slow: not a's seconds
        tracker.operation_host_success(state, b, op_hash)  # type: ignore[arg-type]
    tracker.operation_host_start(state, a, "venv")  # type: ignore[arg-type]
    tracker.operation_host_start(state, b, "venv")  # type: ignore[arg-type]
    clock.now += 3.0
    tracker.operation_host_error(state, b, "venv")  # type: ignore[arg-type]
    tracker.operation_host_success(state, a, "venv")  # type: ignore[arg-type]
    tracker.operation_host_start(state, b, "smoke")  # type: ignore[arg-type]  # not b's op
    transitions = [(e.host, e.stage, e.state, e.seconds) for e in sent if e.state != PENDING]
    assert transitions == [
        ("a", "preflight", RUNNING, None),
        ("a", "preflight", DONE, 2.0),  # on the wire: the plain line says it
        ("a", "system", RUNNING, None),
        ("b", "system", RUNNING, None),
        ("a", "system", DONE, 5.0),  # 1 s + 4 s of its own operations
        ("b", "system", DONE, 25.0),
        ("a", "llm_env", RUNNING, None),
        ("b", "llm_env", RUNNING, None),
        ("b", "llm_env", FAILED, 3.0),
        ("a", "llm_env", DONE, 3.0),
    ]
    assert sent[-2].detail == "failed at 'LLM environment | Install the locked venv'"
    assert tracker.seconds("a") == {"preflight": 2.0, "system": 5.0, "llm_env": 3.0}
    assert tracker.progress.hosts["a"].stages["verify"].state == PENDING


def test_a_host_stopped_by_preflight_stays_failed_there() -> None:
    clock = Clock()
    sent: list[Event] = []
    tracker = StageTracker(sent.append, clock)
    host = Host("old")
    state = State(["stop"], {host: {"stop": None}}, {"stop": "Preflight | stop this host"})
    tracker.begin("old", "preflight")
    clock.now += 1.0
    tracker.end("old", "preflight", "preflight: ubuntu 20.04 is not supported")
    tracker.operation_start(state, "stop")  # type: ignore[arg-type]
    tracker.operation_host_start(state, host, "stop")  # type: ignore[arg-type]
    tracker.operation_host_error(state, host, "stop")  # type: ignore[arg-type]
    assert [(e.state, e.detail) for e in sent] == [
        (RUNNING, ""),
        (FAILED, "preflight: ubuntu 20.04 is not supported"),
    ]
    assert tracker.seconds("old") == {"preflight": 1.0}


def test_the_pipe_writes_one_line_per_event_and_outlives_its_reader(tmp_path: Path) -> None:
    path = tmp_path / "events"
    with path.open("wb") as out:
        emit = pipe(out.fileno())
        emit(Event(1.0, "a", "system", RUNNING))
        emit(Event(2.0, "a", "system", DONE, 1.0))
    emit(Event(3.0, "a", "verify", RUNNING))  # the file is closed: dropped, no error
    lines = path.read_text().splitlines()
    assert [Event.from_json(x).state for x in lines] == [RUNNING, DONE]


# --- the views ------------------------------------------------------------------------------


def test_plain_lines_are_one_per_transition_with_the_seconds_since_the_start() -> None:
    out, err = io.StringIO(), io.StringIO()
    shown = progress_view.PlainView(out, err, clock=Clock(1000.0))
    shown.event(Event(1004.1, "gpu-1", "system", PENDING))
    shown.event(Event(1004.1, "gpu-1", "system", RUNNING))
    shown.output("--> Starting operation: System | Install CA")
    shown.output("[gpu-1] Success", err=True)
    shown.event(Event(1012.6, "gpu-1", "system", DONE, 8.5))
    shown.event(Event(1013.0, "gpu-2", "llm_env", FAILED, 3.04, "failed at 'LLM environment'"))
    assert out.getvalue().splitlines() == [
        "[+   4.1s] gpu-1 system: started",
        "--> Starting operation: System | Install CA",
        "[+  12.6s] gpu-1 system: done in 8.5 s",
        "[+  13.0s] gpu-2 llm_env: FAILED after 3.0 s: failed at 'LLM environment'",
    ]
    assert err.getvalue() == "[gpu-1] Success\n"


def _progress() -> Progress:
    progress = Progress()
    for event in (
        Event(100.0, "gpu-1", "preflight", RUNNING),
        Event(101.2, "gpu-1", "preflight", DONE),
        Event(101.2, "gpu-1", "verify", PENDING),
        Event(101.2, "gpu-1", "system", RUNNING),
        Event(100.0, "gpu-2", "preflight", RUNNING),
        Event(102.0, "gpu-2", "preflight", FAILED, 2.0, "preflight: no lock for Python 3.9"),
    ):
        progress.apply(event)
    return progress


def test_the_live_table_shows_hosts_down_and_stages_across() -> None:
    console = Console(record=True, force_terminal=True, width=120)
    console.print(progress_view.table(_progress(), now=104.2, since=99.0))
    styled = console.export_text(styles=True, clear=False)
    assert "\x1b[" in styled  # colours: a terminal's view, not plain lines
    text = console.export_text()
    header = next(ln for ln in text.splitlines() if "preflight" in ln)
    assert header.index("preflight") < header.index("system") < header.index("verify")
    row1 = next(ln for ln in text.splitlines() if "gpu-1" in ln)
    assert "✓ 1.2" in row1  # preflight, done
    assert "▶ 3.0" in row1  # system, counting
    assert "·" in row1  # verify, pending
    row2 = next(ln for ln in text.splitlines() if "gpu-2" in ln)
    assert "✗ 2.0" in row2
    assert "no lock for Python 3.9" in text
    assert "2 host(s), 5 s" in text


def test_the_live_view_keeps_pyinfras_lines_above_its_table() -> None:
    console = Console(record=True, force_terminal=True, width=120)
    clock = Clock(100.0)
    with progress_view.LiveView(console, clock) as shown:
        shown.event(Event(100.0, "gpu-1", "system", RUNNING))
        shown.output("--> Starting operation: System | Install CA")
        clock.now = 107.5
        shown.event(Event(107.5, "gpu-1", "system", DONE, 7.5))
    text = console.export_text()
    assert "--> Starting operation: System | Install CA" in text
    assert text.rindex("✓ 7.5") > text.index("--> Starting operation")  # the table is last
    assert "[+" not in text  # no plain lines on a terminal
    assert isinstance(progress_view.view(console), progress_view.LiveView)
    assert isinstance(progress_view.view(Console(file=io.StringIO())), progress_view.PlainView)


# --- the pipe between the two processes -----------------------------------------------------

FAKE_PYINFRA = """
import os, sys, json
fd = int(os.environ["GPURIG_PROGRESS_FD"])
print("--> Loading config...")
os.write(fd, b'{"t": %(t)s, "host": "gpu-1", "stage": "system", "state": "running"}\\n')
os.write(fd, b"not an event\\n")
print("[gpu-1] Success", file=sys.stderr)
os.write(fd, b'{"t": %(t)s, "host": "gpu-1", "stage": "system", "state": "done", "seconds": 2}\\n')
sys.exit(3)
"""


def test_run_pyinfra_shows_the_childs_events_and_lines_and_returns_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    script = tmp_path / "fake_pyinfra.py"
    script.write_text(textwrap.dedent(FAKE_PYINFRA % {"t": time.time() + 1.0}))
    console = Console(file=io.StringIO())  # not a terminal: plain lines
    code = deploy_watch.run_pyinfra([sys.executable, str(script)], {}, console)
    assert code == 3
    out, err = capsys.readouterr()
    assert "--> Loading config..." in out
    lines = [ln for ln in out.splitlines() if ln.startswith("[+")]
    assert [ln.split("] ", 1)[1] for ln in lines] == [
        "gpu-1 system: started",
        "gpu-1 system: done in 2.0 s",
    ]
    assert "[gpu-1] Success" in err
    assert "not an event" not in out + err  # a bad line is dropped, the run goes on
