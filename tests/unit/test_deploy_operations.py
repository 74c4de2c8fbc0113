"""gpurig's operations, the pyinfra way: facts in, expected commands out; a noop with its reason
when the host already matches (pyinfra's own tests/test_operations.py does the same)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.exceptions import OperationError
from pyinfra.context import ctx_host
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Directory

from gpurig.facts.system import (
    Account,
    FileInfo,
    FileSizes,
    FileState,
    ManagedPython,
    PasswdEntry,
    ShellTest,
    Venvs,
    VenvState,
)
from gpurig.operations import (
    apt,
    control,
    early,
    files,
    python,
    script,
    smoke,
    users,
    venv,
    wheels,
)
from gpurig.plan import smoke as plan_smoke
from gpurig.plan.steps import Script, Smoke, Venv, WheelFile
from gpurig.plan.venv import marker_json
from gpurig.spec import Stack
from helpers.fake_ssh import FakeTransport


@dataclass
class FakeHost:
    """What operations touch of a pyinfra Host: facts, noop, temp names."""

    facts: dict[type, Any]
    name: str = "host-1"
    noops: list[str] = field(default_factory=list)
    fact_calls: list[tuple[type, dict[str, Any]]] = field(default_factory=list)

    def get_fact(self, cls: type, *args: Any, **kwargs: Any) -> Any:
        self.fact_calls.append((cls, kwargs))
        return self.facts[cls]

    def noop(self, description: str) -> None:
        self.noops.append(description)

    def get_temp_filename(self, key: str | None = None, **_: Any) -> str:
        return f"/tmp/pyinfra-{abs(hash(key)) % 1000}"


def run_op(op: Any, facts: dict[type, Any], **kwargs: Any) -> tuple[list[Any], FakeHost]:
    fake = FakeHost(facts)
    with ctx_host.use(fake):
        commands = list(op._inner(**kwargs))
    return commands, fake


def text(command: Any) -> str:
    return command.get_raw_value() if isinstance(command, StringCommand) else str(command)


# apt ------------------------------------------------------------------------------------------


def test_apt_installs_only_the_missing_with_a_bounded_lock_wait() -> None:
    installed = {"ca-certificates": ["20230311"], "python3": ["3.11.2-1"]}
    wanted = ["ca-certificates", "git", "curl=8.*"]
    commands, _ = run_op(apt.packages, {DebPackages: installed}, packages=wanted, background=True)
    assert len(commands) == 1
    script = text(commands[0])
    # In the foreground when ca-certificates is missing, else as a background job
    # (tests/unit/test_apt_background.py runs both).
    line = script.splitlines()[1].strip()
    assert "setsid nohup sh -c " in script
    assert "apt-get -q -o DPkg::Lock::Timeout=120" in line
    assert line.count("DPkg::Lock::Timeout=120") == 2  # update and install both wait
    assert line.endswith("install -y --no-install-recommends -- git 'curl=8.*'")
    assert "ca-certificates" not in line.split("install")[-1]
    # A later stage's apt step (containers, DCGM): here and now, since its next step needs it.
    commands, _ = run_op(apt.packages, {DebPackages: installed}, packages=wanted)
    (foreground,) = [text(c) for c in commands]
    assert "setsid" not in foreground
    assert foreground == line


def test_apt_noop_when_everything_is_installed() -> None:
    commands, fake = run_op(
        apt.packages, {DebPackages: {"git": ["1"], "ca-certificates": ["2"]}}, packages=["git"]
    )
    assert commands == []
    assert fake.noops == ["apt packages are installed: git"]


# pushed files ---------------------------------------------------------------------------------


@pytest.fixture
def wheel_files(tmp_path: Path) -> list[WheelFile]:
    made = []
    for name, body in [("a-1-py3-none-any.whl", b"a" * 10), ("b-1-py3-none-any.whl", b"b" * 20)]:
        (tmp_path / name).write_bytes(body)
        made.append(WheelFile(name, str(tmp_path / name), hashlib.sha256(body).hexdigest(), 20))
    made[0] = WheelFile(made[0].name, made[0].src, made[0].sha256, 10)
    return made


def test_push_uploads_missing_and_wrong_size_files_then_checks_hashes(
    wheel_files: list[WheelFile],
) -> None:
    """A connector without SSH (no stream): pyinfra's upload, then sha256sum --check."""
    sizes = {"a-1-py3-none-any.whl": 10, "b-1-py3-none-any.whl": 19}  # b was cut short
    commands, _ = run_op(wheels.pushed, {FileSizes: sizes}, wheels=wheel_files, directory="/w")
    uploads = [c for c in commands if isinstance(c, FileUploadCommand)]
    assert [u.dest for u in uploads] == ["/w/b-1-py3-none-any.whl"]
    check = text(commands[-1])
    assert f"{wheel_files[1].sha256}  b-1-py3-none-any.whl" in check
    assert "sha256sum --check" in check
    assert "rm -f b-1-py3-none-any.whl" in check  # a corrupt upload does not survive


def test_push_is_a_noop_when_sizes_match(wheel_files: list[WheelFile]) -> None:
    sizes = {"a-1-py3-none-any.whl": 10, "b-1-py3-none-any.whl": 20, "other.whl": 5}
    commands, fake = run_op(wheels.pushed, {FileSizes: sizes}, wheels=wheel_files, directory="/w")
    assert commands == []
    assert fake.noops == ["2 file(s) in /w"]


def early_push(wheels_: list[WheelFile], directory: str = "/w") -> early.Push:
    """A push preflight would have started, not running: its outcomes set by the test."""
    return early.Push([wheels.transfer(w, directory) for w in wheels_])


def test_an_early_push_is_waited_for_and_its_failures_fail_the_operation(
    wheel_files: list[WheelFile],
) -> None:
    pushing = early_push(wheel_files)
    # The early push placed `a` already: the fact sees it, the operation still waits for it.
    sizes = {"a-1-py3-none-any.whl": 10}
    commands, _ = run_op(
        wheels.pushed, {FileSizes: sizes}, wheels=wheel_files, directory="/w", early=pushing
    )
    (finish,) = commands
    assert isinstance(finish, FunctionCommand)
    assert finish.args[0] == wheel_files
    fake = SimpleNamespace(print_prefix="[host-1] ")
    pushing.done = {w.name: None for w in wheel_files}
    assert wheels.finish(None, fake, *finish.args) is True
    pushing.done["b-1-py3-none-any.whl"] = "the host read nothing (exit 1)"
    assert wheels.finish(None, fake, *finish.args) is False  # no connection to push it again


def test_what_the_early_push_did_not_place_is_pushed_again(
    wheel_files: list[WheelFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    pushing = early_push(wheel_files)
    pushing.done = {wheel_files[0].name: None, wheel_files[1].name: "EOFError: connection lost"}
    pushed_again: list[str] = []

    def send(transport: object, transfer: early.Transfer) -> None:
        pushed_again.append(transfer.key)

    monkeypatch.setattr(wheels, "transport_of", lambda host: object())
    monkeypatch.setattr(wheels, "send", send)
    fake = SimpleNamespace(print_prefix="[host-1] ")
    assert wheels.finish(None, fake, wheel_files, "/w", pushing) is True
    assert pushed_again == [wheel_files[1].name]  # only what failed in the background


def _receive(tmp_path: Path, wheel: WheelFile, body: bytes) -> subprocess.CompletedProcess[str]:
    script = wheels.receive(wheel, str(tmp_path / "wheels"))
    return subprocess.run(
        ["/bin/sh", "-c", script], input=body.decode(), capture_output=True, text=True
    )


def test_a_streamed_wheel_is_renamed_into_place_only_with_its_hash(
    tmp_path: Path, wheel_files: list[WheelFile]
) -> None:
    wheel = wheel_files[1]
    folder = tmp_path / "wheels"
    done = _receive(tmp_path, wheel, b"b" * 20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == wheel.sha256
    assert (folder / wheel.name).read_bytes() == b"b" * 20
    assert sorted(p.name for p in folder.iterdir()) == [wheel.name]
    for corrupt in (b"c" * 20, b"b" * 19):  # other bytes; cut short
        (folder / wheel.name).write_bytes(b"old")
        done = _receive(tmp_path, wheel, corrupt)
        assert done.returncode == 1
        assert (folder / wheel.name).read_bytes() == b"old"  # the wrong bytes never take the name
        assert sorted(p.name for p in folder.iterdir()) == [wheel.name]  # no partial left


# the locked venv ------------------------------------------------------------------------------

VENVS = "/opt/gpurig/venvs"
NEW = f"{VENVS}/cpu-cp311-aaaaaaaaaaaa"
OLD = f"{VENVS}/cpu-cp311-bbbbbbbbbbbb"
OLDER = f"{VENVS}/cpu-cp311-cccccccccccc"
MARKER = marker_json({"venv_id": "cpu-cp311-aaaaaaaaaaaa", "target": "cpu-cp311"})


def step() -> Venv:
    return Venv(
        "llm_env.venv",
        "Install the locked venv (cpu-cp311)",
        link="/opt/gpurig/venv",
        venvs_dir=VENVS,
        venv_dir=NEW,
        marker_file="gpurig-venv.json",
        marker=MARKER,
        requirements_path="/var/cache/gpurig/requirements/cpu-cp311-aaaaaaaaaaaa.txt",
        script="the plan's build script",
    )


def test_fresh_host_runs_the_plans_script() -> None:
    commands, _ = run_op(venv.locked_venv, {VenvState: Venvs()}, step=step())
    assert [text(c) for c in commands] == ["the plan's build script"]


def test_complete_live_venv_is_a_noop() -> None:
    state = Venvs(live=NEW, mtimes={NEW: 2, OLD: 1}, markers={NEW: MARKER})
    commands, fake = run_op(venv.locked_venv, {VenvState: state}, step=step())
    assert commands == []
    assert fake.noops == [f"/opt/gpurig/venv -> {NEW} is complete"]


@pytest.mark.parametrize(
    "state",
    [
        # NEW has no marker: a cut-off install; OLD is live.
        Venvs(live=OLD, mtimes={NEW: 3, OLD: 1}, markers={OLD: "{}"}),
        # complete, but not live
        Venvs(live=OLD, mtimes={NEW: 3, OLD: 1}, markers={NEW: MARKER, OLD: "{}"}),
        # live and complete, with one venv too many
        Venvs(live=NEW, mtimes={NEW: 3, OLD: 2, OLDER: 1}, markers={NEW: MARKER}),
        # a directory at the live path
        Venvs(live_is_dir=True, mtimes={NEW: 1}, markers={NEW: MARKER}),
    ],
    ids=["interrupted", "not-live", "leftover", "directory"],
)
def test_a_host_that_differs_runs_the_script(state: Venvs) -> None:
    commands, _ = run_op(venv.locked_venv, {VenvState: state}, step=step())
    assert [text(c) for c in commands] == ["the plan's build script"]


# the service user ---------------------------------------------------------------------------


def test_service_user_is_created_once_and_corrected() -> None:
    commands, _ = run_op(
        users.service_user, {PasswdEntry: None}, user="gpurig", home="/var/lib/gpurig"
    )
    assert text(commands[0]) == (
        "useradd --system --user-group --create-home --home-dir /var/lib/gpurig "
        "--shell /bin/bash gpurig"
    )
    existing = Account("gpurig", "/var/lib/gpurig", "/usr/sbin/nologin")
    commands, _ = run_op(
        users.service_user, {PasswdEntry: existing}, user="gpurig", home="/var/lib/gpurig"
    )
    assert text(commands[0]) == "usermod --shell /bin/bash gpurig"
    good = Account("gpurig", "/var/lib/gpurig", "/bin/bash")
    commands, fake = run_op(
        users.service_user, {PasswdEntry: good}, user="gpurig", home="/var/lib/gpurig"
    )
    assert commands == []
    assert fake.noops == ["user gpurig exists"]


def test_passwd_entry_parses_getent() -> None:
    line = "gpurig:x:999:996::/var/lib/gpurig:/bin/bash"
    assert PasswdEntry().process([line]) == Account("gpurig", "/var/lib/gpurig", "/bin/bash")
    assert PasswdEntry().process([]) is None


# uv's Python ----------------------------------------------------------------------------------


def test_managed_python_installs_once() -> None:
    commands, _ = run_op(
        python.managed_python, {ManagedPython: None}, version="3.12", install_dir="/opt/py"
    )
    assert (
        text(commands[0]) == "UV_PYTHON_INSTALL_DIR=/opt/py /usr/local/bin/uv python install 3.12"
    )
    commands, fake = run_op(
        python.managed_python,
        {ManagedPython: "/opt/py/cpython-3.12.9-linux-x86_64-gnu/bin/python3.12"},
        version="3.12",
        install_dir="/opt/py",
    )
    assert commands == []
    assert fake.noops[0].startswith("Python 3.12 is installed")


# stopping a host ------------------------------------------------------------------------------


def test_stop_host_fails_the_host_with_its_reason() -> None:
    control.FAILURES.clear()
    commands, _ = run_op(control.stop_host, {}, reason="preflight: ubuntu 20.04 unsupported")
    (command,) = commands
    assert isinstance(command, FunctionCommand)

    @dataclass
    class Logged(FakeHost):
        lines: list[str] = field(default_factory=list)

        def log_styled(self, message: str, **_: Any) -> None:
            self.lines.append(message)

    target = Logged({}, name="old-box")
    # Through pyinfra's own call: it passes state and host only to parameters so named.
    assert command.execute(None, target, {}) is False  # type: ignore[arg-type]
    assert control.FAILURES == {"old-box": "preflight: ubuntu 20.04 unsupported"}
    assert target.lines == ["preflight: ubuntu 20.04 unsupported"]


# smoke ----------------------------------------------------------------------------------------


@dataclass
class Output:
    output_lines: list[str]


class SmokeHost(FakeHost):
    def __init__(self, lines: list[str], remote_report: dict[str, Any] | None) -> None:
        super().__init__({}, name="gpu-1")
        self.lines = lines
        self.remote_report = remote_report
        self.commands: list[str] = []
        self.logged: list[str] = []

    def run_shell_command(self, command: StringCommand, **kwargs: Any) -> tuple[bool, Output]:
        assert kwargs["_sudo"] is True
        self.commands.append(command.get_raw_value())
        return True, Output(self.lines)

    def get_file(self, remote: str, local: str, **_: Any) -> bool:
        if self.remote_report is None:
            return False
        Path(local).write_text(json.dumps(self.remote_report))
        return True

    def log_styled(self, message: str, **_: Any) -> None:
        self.logged.append(message)


def smoke_step() -> Smoke:
    stack = Stack.model_validate(
        {"python": ["3.11"], "torch": {"version": "2.13.0", "variants": ["cpu"]}}
    )
    return plan_smoke.step(stack, has_gpu=True)


def test_smoke_runs_as_the_service_user_in_a_login_shell() -> None:
    line = smoke_step().command
    assert "timeout -k 15 900 runuser -l gpurig -c" in line
    assert "'bloomkit smoke --json /var/lib/gpurig/smoke.json --model tiny --require-gpu'" in line


def test_a_passing_report_is_fetched_and_the_host_passes(tmp_path: Path) -> None:
    remote = {"verdict": "pass", "host": "h", "duration_s": 12.5, "env": {}, "stages": []}
    fake = SmokeHost(["...", "gpurig-smoke-exit=0"], remote)
    seen: list[str] = []
    (command,), _ = run_op(
        smoke.smoke,
        {},
        step=smoke_step(),
        reports_dir=str(tmp_path / "reports"),
        on_report=seen.append,
    )
    assert command.execute(None, fake, {}) is True
    assert json.loads((tmp_path / "reports" / "gpu-1.json").read_text()) == remote
    assert seen == ["gpu-1"]


def test_a_failing_report_fails_the_host_after_it_is_fetched(tmp_path: Path) -> None:
    control.FAILURES.clear()
    remote = {"verdict": "fail", "failures": ["gemm: 120 TFLOP/s < 70% of H100's 989"]}
    fake = SmokeHost(["gpurig-smoke-exit=1"], remote)
    assert (
        smoke.run_smoke(None, fake, smoke_step(), str(tmp_path / "reports"), lambda _: None)
        is False
    )  # type: ignore[arg-type]
    assert (tmp_path / "reports" / "gpu-1.json").exists()
    assert control.FAILURES["gpu-1"] == "smoke: gemm: 120 TFLOP/s < 70% of H100's 989"


def test_a_smoke_timeout_without_a_report_says_so(tmp_path: Path) -> None:
    fake = SmokeHost(["gpurig-smoke-exit=124"], None)
    assert (
        smoke.run_smoke(None, fake, smoke_step(), str(tmp_path / "reports"), lambda _: None)
        is False
    )  # type: ignore[arg-type]
    written = json.loads((tmp_path / "reports" / "gpu-1.json").read_text())
    assert written["source"] == "gpurig"
    assert written["failures"] == [
        "smoke: timed out after 900 s (smoke.timeout_s) and wrote no report"
    ]


def test_a_crash_without_a_report_keeps_the_last_line(tmp_path: Path) -> None:
    fake = SmokeHost(["-bash: line 1: bloomkit: command not found", "gpurig-smoke-exit=127"], None)
    assert (
        smoke.run_smoke(None, fake, smoke_step(), str(tmp_path / "reports"), lambda _: None)
        is False
    )  # type: ignore[arg-type]
    written = json.loads((tmp_path / "reports" / "gpu-1.json").read_text())
    assert written["failures"] == [
        "smoke: exited 127 without a report: -bash: line 1: bloomkit: command not found"
    ]


# config files ---------------------------------------------------------------------------------


def test_installed_file_uploads_and_runs_its_follow_up() -> None:
    commands, _ = run_op(
        files.installed, {FileState: None}, src=b"CA", dest="/usr/local/x.crt", then="update"
    )
    assert isinstance(commands[1], FileUploadCommand)
    assert [text(c) for c in commands[2:]] == [
        "chmod 644 /usr/local/x.crt",
        "chown root:root /usr/local/x.crt",
        "update",
    ]


def test_over_ssh_a_new_file_is_streamed_in_one_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(files, "transport_of", lambda host: object())
    commands, _ = run_op(
        files.installed, {FileState: None}, src=b"CA", dest="/usr/local/x.crt", then="update"
    )
    assert isinstance(commands[0], FunctionCommand)
    digest = hashlib.sha256(b"CA").hexdigest()
    assert commands[0].args == (b"CA", "/usr/local/x.crt", "644", "root:root", digest)
    assert commands[1:] == ["update"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the receiving script chowns, as root")
def test_a_streamed_file_replaces_its_destination_whole_and_only_with_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "transport_of", lambda host: FakeTransport())
    fake = SimpleNamespace(print_prefix="[host-1] ")
    dest = tmp_path / "etc" / "gpurig" / "environment"
    body = b"HF_HOME=/var/cache/gpurig/huggingface\n"
    digest = hashlib.sha256(body).hexdigest()
    assert files.put(None, fake, body, str(dest), "0600", "root:root", digest) is True
    assert dest.read_bytes() == body
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    # A wrong hash (bytes lost on the way) leaves the old file and no temporary one.
    assert files.put(None, fake, b"HF_HOME=/x\n", str(dest), "0644", "root:root", digest) is False
    assert dest.read_bytes() == body
    assert sorted(p.name for p in dest.parent.iterdir()) == ["environment"]
    # A link at the destination is replaced by the file, not written through.
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert files.put(None, fake, body, str(link), "0644", "root:root", digest) is True
    assert not link.is_symlink()
    assert link.read_bytes() == body
    assert target.read_bytes() == b"keep\n"
    # A folder of that name is never written into.
    (tmp_path / "folder").mkdir()
    assert (
        files.put(None, fake, body, str(tmp_path / "folder"), "0644", "root:root", digest) is False
    )
    assert list((tmp_path / "folder").iterdir()) == []
    # A controller file goes the same way (uv's binary, the CA bundle).
    src = tmp_path / "uv"
    src.write_bytes(body)
    assert files.put(None, fake, src, str(tmp_path / "bin" / "uv"), "0755", "root:root", digest)
    assert oct((tmp_path / "bin" / "uv").stat().st_mode & 0o777) == "0o755"


def test_installed_file_fixes_only_the_mode_without_the_follow_up() -> None:
    digest = hashlib.sha256(b"CA").hexdigest()
    state = {FileState: FileInfo("600", "root:root", digest)}
    commands, _ = run_op(files.installed, state, src=b"CA", dest="/x.crt", then="update")
    assert [text(c) for c in commands] == ["chmod 644 /x.crt"]
    state = {FileState: FileInfo("644", "root:root", digest)}
    commands, fake = run_op(files.installed, state, src=b"CA", dest="/x.crt", then="update")
    assert commands == []
    assert fake.noops == ["/x.crt is up to date"]


def test_a_folder_is_made_and_owned_in_one_command_and_fixed_only_where_it_differs() -> None:
    kw = {"path": "/var/lib/gpurig", "owner": "gpurig", "group": "gpurig", "mode": "0750"}
    commands, _ = run_op(files.folder, {Directory: None}, **kw)
    assert commands == [
        "mkdir -p /var/lib/gpurig && chown gpurig:gpurig /var/lib/gpurig "
        "&& chmod 750 /var/lib/gpurig"
    ]
    wrong_mode = {"user": "gpurig", "group": "gpurig", "mode": 755}
    commands, _ = run_op(files.folder, {Directory: wrong_mode}, **kw)
    assert commands == ["chmod 750 /var/lib/gpurig"]
    placed = {"user": "gpurig", "group": "gpurig", "mode": 750}
    commands, fake = run_op(files.folder, {Directory: placed}, **kw)
    assert commands == []
    assert fake.noops == ["folder /var/lib/gpurig is in place"]
    with pytest.raises(OperationError, match="exists and is not a folder"):
        run_op(files.folder, {Directory: False}, **kw)


def test_a_script_step_runs_unless_its_test_holds_on_the_host() -> None:
    step = Script("containers.x", "Do x", script="echo do-x", unless="test -e /x")
    commands, fake = run_op(script.scripted, {ShellTest: False}, step=step)
    assert [tuple(c.bits) for c in commands] == [("echo do-x",)]
    assert type(commands[0]).__name__ == "DiagnosedCommand"  # a failure reads as a diagnosis
    assert fake.fact_calls == [(ShellTest, {"test": "test -e /x"})]
    commands, fake = run_op(script.scripted, {ShellTest: True}, step=step)
    assert commands == []
    assert fake.noops == ["in place: Do x"]
    always = Script("verify.y", "Check y", script="echo y")  # no test: a check, every run
    commands, fake = run_op(script.scripted, {}, step=always)
    assert len(commands) == 1
    assert fake.fact_calls == []
    assert ShellTest().process(["gpurig-test=yes"]) is True
    assert ShellTest().process(["gpurig-test=no"]) is False
