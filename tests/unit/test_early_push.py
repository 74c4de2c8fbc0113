"""Preflight's background push (gpurig.operations.early): what goes, in what order, how each
step waits for its own file, and what a failure leaves. The host-side scripts run here, through
a fake SSH transport, on real bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
from pyinfra.api.command import FunctionCommand
from pyinfra.context import ctx_host

from gpurig.deploys import render
from gpurig.facts.in_place import HostInPlace
from gpurig.operations import early, files, wheels
from gpurig.plan.steps import File, WheelFile, Wheels
from helpers.fake_ssh import FakeTransport

FAKE_HOST = SimpleNamespace(print_prefix="[host-1] ", log=lambda message: None)


def transfer(key: str, size: int) -> early.Transfer:
    return early.Transfer(key, "/src", size, "0" * 64, "true")


def test_a_few_files_fly_at_once_the_biggest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    many = [transfer(f"w{i}", size=i) for i in range(8)]
    started: list[str] = []
    flying, most = 0, 0

    def send(transport: object, one: early.Transfer) -> str | None:
        nonlocal flying, most
        started.append(one.key)
        flying += 1
        most = max(most, flying)
        gevent.sleep(0.01)  # the bytes in flight: the other channels go on meanwhile
        flying -= 1
        if one.size == 3:
            raise EOFError("connection lost")
        return None

    monkeypatch.setattr(early, "send", send)
    push = early.Push(many)
    push.run(transport=None)  # type: ignore[arg-type]
    assert started[0] == "w7"  # the longest transfer first
    assert most == early.CHANNELS
    assert push.done.pop("w3") == "EOFError: connection lost"
    assert push.done == {t.key: None for t in many if t.size != 3}  # the others went on


def test_a_step_waits_for_its_own_file_not_the_whole_push(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow, quick = transfer("torch.whl", 190), transfer("/usr/local/bin/uv", 38)
    release = gevent.event.Event()

    def send(transport: object, one: early.Transfer) -> str | None:
        if one is slow:
            release.wait()  # still streaming
        return None

    monkeypatch.setattr(early, "send", send)
    push = early.Push([slow, quick])
    push.greenlet = gevent.spawn(push.run, None)
    with gevent.Timeout(5):
        assert push.outcome("/usr/local/bin/uv") is None
    assert "torch.whl" not in push.done  # the big one is still on its way
    assert list(push.seconds) == ["/usr/local/bin/uv"]  # each file's own seconds
    release.set()
    with gevent.Timeout(5):
        assert push.outcome("torch.whl") is None


def test_a_push_that_ended_without_a_file_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    push = early.Push([transfer("a.whl", 1)])
    push.greenlet = gevent.spawn(lambda: None)  # ended (or was killed) before sending it
    with gevent.Timeout(5):
        assert push.outcome("a.whl") == "not pushed"


def test_the_push_takes_the_wheels_the_host_lacks_and_big_files_of_steps_not_in_place(
    tmp_path: Path,
) -> None:
    uv, ca = tmp_path / "uv", tmp_path / "ca.crt"
    uv.write_bytes(b"u" * early.MIN_BYTES)
    ca.write_bytes(b"c" * 100)  # small: its own step's round trip, not a place in the queue
    new, placed = (WheelFile(n, str(tmp_path / n), "0" * 64, size=5) for n in ("a.whl", "b.whl"))
    steps = [
        File.copy("system.ca", "CA", "/usr/local/share/ca.crt", src=str(ca), sha256="1" * 64),
        File.copy(
            "python.uv", "uv", "/usr/local/bin/uv", src=str(uv), sha256="2" * 64, mode="0755"
        ),
        File.text("llm_env.requirements", "reqs", "/etc/r.txt", "x\n"),
        Wheels("llm_env.wheels", "wheels", directory="/opt/wheels", wheels=[new, placed]),
    ]
    known = HostInPlace(wheels={"b.whl": 5})
    chosen = render.early_transfers(steps, known)
    assert [(t.key, t.size) for t in chosen] == [
        ("/usr/local/bin/uv", early.MIN_BYTES),
        ("a.whl", 5),
    ]
    assert "chmod 0755 " in chosen[0].script  # the step's own mode and owner
    assert "chown root:root " in chosen[0].script
    # Steps the probe found in place send nothing.
    known = HostInPlace(steps=frozenset({"python.uv", "llm_env.wheels"}))
    assert render.early_transfers(steps, known) == []


def test_a_file_in_the_push_is_waited_for_and_its_follow_up_still_runs() -> None:
    push = early.Push([transfer("/usr/local/x.crt", 2)])
    fake = SimpleNamespace(get_fact=lambda *a, **k: pytest.fail("no fact: the push decides"))
    with ctx_host.use(fake):
        commands = list(
            files.installed._inner(src=b"CA", dest="/usr/local/x.crt", then="update", early=push)
        )
    put, then = commands
    assert isinstance(put, FunctionCommand)
    assert put.kwargs == {"early": push}
    assert then == "update"


@pytest.mark.skipif(os.geteuid() != 0, reason="the receiving script chowns, as root")
def test_a_file_pushed_early_lands_whole_and_a_failed_one_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"#!/bin/sh\necho uv\n"
    src = tmp_path / "uv"
    src.write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    dest = str(tmp_path / "bin" / "uv")
    push = early.Push([files.transfer(str(src), dest, "0755", "root:root", digest)])
    push.run(FakeTransport())  # type: ignore[arg-type]
    assert push.done == {dest: None}
    assert Path(dest).read_bytes() == body
    assert oct(Path(dest).stat().st_mode & 0o777) == "0o755"
    assert files.put(None, FAKE_HOST, src, dest, "0755", "root:root", digest, early=push)
    # Lost on the way: the operation streams it itself.
    Path(dest).unlink()
    push.done[dest] = "the host read nothing (exit 1)"
    monkeypatch.setattr(files, "transport_of", lambda host: FakeTransport())
    assert files.put(None, FAKE_HOST, src, dest, "0755", "root:root", digest, early=push)
    assert Path(dest).read_bytes() == body


@pytest.mark.skipif(os.geteuid() != 0, reason="the receiving script chowns, as root")
def test_wheels_and_files_share_one_push(tmp_path: Path) -> None:
    wheel_body, uv_body = b"w" * 50, b"u" * 70
    (tmp_path / "a.whl").write_bytes(wheel_body)
    (tmp_path / "uv").write_bytes(uv_body)
    wheel = WheelFile("a.whl", str(tmp_path / "a.whl"), hashlib.sha256(wheel_body).hexdigest(), 50)
    uv_digest = hashlib.sha256(uv_body).hexdigest()
    push = early.Push(
        [
            wheels.transfer(wheel, str(tmp_path / "wheels")),
            files.transfer(
                str(tmp_path / "uv"), str(tmp_path / "bin/uv"), "0755", "0:0", uv_digest
            ),
        ]
    )
    push.run(FakeTransport())  # type: ignore[arg-type]
    assert push.done == {"a.whl": None, str(tmp_path / "bin/uv"): None}
    assert (tmp_path / "wheels" / "a.whl").read_bytes() == wheel_body
    assert wheels.finish(None, FAKE_HOST, [wheel], str(tmp_path / "wheels"), push)
