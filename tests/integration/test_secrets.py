"""A planted secret, and a planted link, on one real sandbox host through both front ends.

The secret is the proxy's password (network.proxy = http://gpurig:<secret>@127.0.0.1:<port>).
The proxy is real (below, in this process: CONNECT tunnelled, plain http sent on one request per
connection): it forwards only
requests that carry the credentials, so a deploy that passes proves the host used them: apt's
lists and packages and uv's downloads from PyPI go through it. The pyinfra deploy provisions
the fresh host, then Ansible runs the same spec on it, both at -vv. Then every line of their
output, every file they wrote on the controller (reports, temp folders, Ansible's home) and
every file under the host's /etc, /opt/gpurig, /var/lib/gpurig, /var/cache/gpurig, /var/log,
/home, /tmp and /root is searched for the secret: it may be only in the two files that must
hold it (/etc/gpurig/environment 0640 root:gpurig, the apt proxy file 0600 root), never on a
process's command line (sampled on the host throughout both runs), and never in a login
environment of another user.

Then the service user, who owns the report's folder, leaves a link to /etc/shadow where the
smoke report goes (a `bloomkit` of its own first on its PATH, from its ~/.profile): neither
front end fetches it; each reports the host as failed without a report.

One fleet of one host, a fresh deploy and three converged runs: about ten minutes on 2 cores.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import select
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from gpurig.sandbox.testing import SandboxFleet
from helpers.front_ends import BIN, REPO_ROOT, Run, ansible_env, run_logged

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_TIMEOUT_S = 1500
SECRET = f"PLANTED{secrets.token_hex(8)}"
HOLDERS = {"/etc/gpurig/environment", "/etc/apt/apt.conf.d/90gpurig-proxy"}
HOST_DIRS = "/etc /opt/gpurig /var/lib/gpurig /var/cache/gpurig /var/log /home /tmp /root"
SAMPLES = "/var/tmp/gpurig-argv-hits"
# Samples every process's command line on the host while the front ends run, and records the
# command name of any that holds the secret. The pattern is split so that the sampler's own
# command line does not hold it.
SAMPLER = (
    "sudo -n setsid -f sh -c '"
    f'pat="{SECRET[:7]}""{SECRET[7:]}"; end=$(($(date +%s) + {2 * RUN_TIMEOUT_S})); '
    'while [ "$(date +%s)" -lt "$end" ] && [ ! -e /var/tmp/gpurig-sampler-stop ]; do '
    "for p in /proc/[0-9]*; do "
    'tr "\\0" " " < $p/cmdline 2>/dev/null | grep -qF "$pat" && '
    f"cat $p/comm >> {SAMPLES}; "
    "done; sleep 0.2; done' </dev/null >/dev/null 2>&1"
)


# --- a forwarding proxy that demands the planted credentials -------------------------------

PROXY_TIMEOUT_S = 120  # an idle tunnel or origin is dropped after this long


@dataclass
class Counts:
    allowed: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, allowed: bool) -> None:
        with self.lock:
            if allowed:
                self.allowed += 1
            else:
                self.refused += 1


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(the request head up to the blank line, whatever body bytes came with it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
        if len(data) > 65536:
            return b"", b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes or stays idle for PROXY_TIMEOUT_S."""
    sockets = [a, b]
    while True:
        readable, _, _ = select.select(sockets, [], [], PROXY_TIMEOUT_S)
        if not readable:
            return
        for sock in readable:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                (b if sock is a else a).sendall(chunk)
            except OSError:  # a client that hung up first (apt after its response)
                return


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(PROXY_TIMEOUT_S)
        head, rest = _read_head(client)
        if not head:
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = [line for line in header_lines if line]
        given = [
            line.split(":", 1)[1].strip()
            for line in headers
            if line.lower().startswith("proxy-authorization:")
        ]
        allowed = self.server.expected in given
        self.server.counts.add(allowed)
        if not allowed:
            client.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="gpurig-test"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=PROXY_TIMEOUT_S) as origin:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    origin.sendall(rest)
                _relay(client, origin)
            return
        url = urlsplit(target)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        kept = [
            line
            for line in headers
            if not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        forwarded = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close"])
        with socket.create_connection(
            (url.hostname or "", url.port or 80), timeout=PROXY_TIMEOUT_S
        ) as origin:
            origin.sendall(forwarded.encode("latin-1") + b"\r\n\r\n" + rest)
            _relay(client, origin)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, user: str, password: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.expected = f"Basic {token}"
        self.counts = Counts()


@dataclass(frozen=True)
class Proxy:
    port: int
    counts: Counts


@contextlib.contextmanager
def running(user: str, password: str) -> Iterator[Proxy]:
    """A proxy on 127.0.0.1:<free port> for as long as the block runs."""
    server = _Server(user, password)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Proxy(server.server_address[1], server.counts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- the front ends on one host --------------------------------------------------------------


@dataclass
class Planted:
    fleet: SandboxFleet
    host: str
    proxy: Proxy
    controller_dirs: list[Path]
    reports: Path
    env: dict[str, str]
    runs: list[Run]


def pyinfra_deploy(env: dict[str, str], name: str) -> Run:
    argv = [sys.executable, "-m", "gpurig.cli", "deploy", "--", "-vv"]
    return run_logged(name, argv, env, RUN_TIMEOUT_S)


def ansible_playbook(fleet: SandboxFleet, env: dict[str, str], name: str) -> Run:
    argv = [str(BIN / "ansible-playbook"), "-vv", "-i", str(fleet.ansible_inventory)]
    return run_logged(name, [*argv, "playbooks/gpu.yml"], env, RUN_TIMEOUT_S)


def ssh_ok(fleet: SandboxFleet, host: str, command: str) -> str:
    code, out = fleet.ssh(host, command)
    assert code == 0, f"{command!r} on {host}: exit {code}: {out}"
    return out


@pytest.fixture(scope="module")
def planted(
    sandbox_fleet: Callable[..., SandboxFleet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Planted]:
    fleet = sandbox_fleet(os="bookworm", count=1, name="secrets")
    host = fleet.hosts[0].name
    root = tmp_path_factory.mktemp("secrets")
    reports, temp, ansible_home = root / "reports", root / "tmp", root / "ansible"
    for folder in (reports, temp, ansible_home):
        folder.mkdir()
    with running("gpurig", SECRET) as proxy:
        stack = yaml.safe_load((REPO_ROOT / "stack.yml").read_text())
        stack["network"]["proxy"] = f"http://gpurig:{SECRET}@127.0.0.1:{proxy.port}"
        stack_file = root / "stack.yml"
        stack_file.write_text(yaml.safe_dump(stack))
        env = ansible_env(
            {
                **fleet.env,
                "GPURIG_STACK": str(stack_file),
                "GPURIG_REPORTS_DIR": str(reports),
                "TMPDIR": str(temp),
                "ANSIBLE_HOME": str(ansible_home),
                "ANSIBLE_LOCAL_TEMP": str(ansible_home / "tmp"),
            }
        )
        ssh_ok(fleet, host, SAMPLER)
        runs = [pyinfra_deploy(env, "pyinfra -vv (fresh)")]
        runs.append(ansible_playbook(fleet, env, "ansible-playbook -vv"))
        ssh_ok(fleet, host, "sudo -n touch /var/tmp/gpurig-sampler-stop")
        yield Planted(fleet, host, proxy, [reports, temp, ansible_home], reports, env, runs)


def test_both_front_ends_pass_through_the_authenticating_proxy(planted: Planted) -> None:
    for run in planted.runs:
        assert run.code == 0, f"{run.name} failed"
    # apt and uv went through it with the credentials, and nothing came without them.
    assert planted.proxy.counts.allowed > 0
    assert planted.proxy.counts.refused == 0


def test_the_secret_is_in_no_output_and_no_controller_file(planted: Planted) -> None:
    for run in planted.runs:
        leaked = [line for line in run.output.splitlines() if SECRET in line]
        assert leaked == [], f"{run.name} printed the secret: {leaked[:3]}"
    for folder in planted.controller_dirs:
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files or folder.name != "reports"  # the reports were written here
        holding = [p for p in files if SECRET.encode() in p.read_bytes()]
        assert holding == [], holding
    for relative in ("lock", "roles"):
        found = subprocess.run(
            ["grep", "-rlF", SECRET, str(REPO_ROOT / relative)], capture_output=True, text=True
        )
        assert found.stdout == ""


def test_the_secret_is_only_in_its_two_files_on_the_host(planted: Planted) -> None:
    fleet, host = planted.fleet, planted.host
    code, out = fleet.ssh(host, f"sudo -n grep -rlsF {SECRET} {HOST_DIRS}", timeout=600)
    assert code in (0, 1), out
    assert set(out.split()) == HOLDERS
    modes = ssh_ok(fleet, host, f"sudo -n stat -c '%n %a %U %G' {' '.join(sorted(HOLDERS))}")
    assert sorted(modes.splitlines()) == [
        "/etc/apt/apt.conf.d/90gpurig-proxy 600 root root",
        "/etc/gpurig/environment 640 root gpurig",
    ]
    # Never on a command line while both front ends ran.
    hits = ssh_ok(fleet, host, f"sudo -n cat {SAMPLES} 2>/dev/null || true")
    assert hits.strip() == ""
    # Not in the login environment of users other than root and the service user.
    login = ssh_ok(fleet, host, "bash -lc env")
    assert SECRET not in login
    assert "/opt/gpurig/venv/bin" in login  # the profile script did run


HOME = "/var/lib/gpurig"  # the service user's home: its own, and the report's folder
FAKE_BLOOMKIT = b"""#!/bin/sh
# Called as `bloomkit smoke --json REPORT ...`: leaves a link where the report goes.
ln -sfn /etc/shadow "$3"
"""


def test_a_report_linked_to_a_root_only_file_is_not_fetched(planted: Planted) -> None:
    fleet, host = planted.fleet, planted.host
    script = base64.b64encode(FAKE_BLOOMKIT).decode()
    ssh_ok(
        fleet,
        host,
        "sudo -n runuser -u gpurig -- sh -c '"
        f"mkdir -p {HOME}/bin && echo {script} | base64 -d > {HOME}/bin/bloomkit && "
        f'chmod 755 {HOME}/bin/bloomkit && echo "PATH={HOME}/bin:\\$PATH" > {HOME}/.profile\'',
    )
    shadow = ssh_ok(fleet, host, "sudo -n head -n 1 /etc/shadow").strip()
    assert shadow.startswith("root:")
    try:
        for name, run_it in (
            ("pyinfra (linked report)", lambda n: pyinfra_deploy(planted.env, n)),
            ("ansible (linked report)", lambda n: ansible_playbook(fleet, planted.env, n)),
        ):
            run = run_it(name)
            # The link was really there: the service user's own bloomkit ran.
            link = ssh_ok(fleet, host, "sudo -n readlink /var/lib/gpurig/smoke.json").strip()
            assert link == "/etc/shadow", name
            assert run.code != 0, f"{name}: a host without its report must fail"
            report = (planted.reports / f"{host}.json").read_text()
            assert shadow not in report
            assert shadow not in run.output
            assert json.loads(report)["verdict"] != "pass"
    finally:
        ssh_ok(
            fleet,
            host,
            f"sudo -n rm -rf {HOME}/bin {HOME}/.profile {HOME}/smoke.json",
        )
