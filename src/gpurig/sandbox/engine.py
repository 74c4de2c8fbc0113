"""The Docker engine every gpurig module talks to: one that answers, or a loopback-only one of ours.

Ours runs with no bridge, no iptables and no masquerading, so a container reaches the network
only through `--network host`, and the engine never touches the machine's firewall.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException
from requests.exceptions import RequestException

from gpurig.errors import GpurigError, UsageError
from gpurig.sandbox.paths import engine_dir
from gpurig.sandbox.system import ensure_command, path_with_sbin, require_root, unmount_under

log = logging.getLogger(__name__)

SYSTEM_SOCKET_URL = "unix:///var/run/docker.sock"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 3
# Image imports and container starts on a busy 2-core machine outlast the SDK's 60 s default.
CLIENT_TIMEOUT_S = 300
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes, with its NUL
# Variables the Docker client reads besides DOCKER_HOST, passed on with it.
_CLIENT_VARS = ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
NO_ENGINE = (
    "no Docker engine reachable: run `gpurig sandbox engine` (or `make engine`) "
    "to start a loopback-only one"
)


@dataclass(frozen=True)
class EnginePaths:
    """Files of our own engine; all under the engine dir except the exec-root."""

    root: Path

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        # dockerd puts sockets named by 64-hex ids under the exec-root; a long path overflows
        # sun_path, so it lives in a short runtime dir named by a hash of the engine dir.
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        base = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
        return base / f"gpurig-{tag}"

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def check(self) -> None:
        """sun_path holds 108 bytes: refuse a socket path dockerd could not bind."""
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise UsageError(
                f"engine socket path {self.socket} is too long for a unix socket: "
                "set GPURIG_ENGINE_DIR to a shorter directory"
            )


@dataclass(frozen=True)
class EngineStatus:
    url: str
    ours: bool
    pid: int | None = None
    started_in_s: float | None = None  # set when this call started it


def engine_paths() -> EnginePaths:
    return EnginePaths(engine_dir())


def our_pid(paths: EnginePaths | None = None) -> int | None:
    """PID of our dockerd when its pidfile names a live dockerd (not a reused PID)."""
    paths = paths or engine_paths()
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_dockerd(pid) else None


def endpoint() -> str | None:
    """URL of the engine to use: ours when it runs, else DOCKER_HOST, else the system socket."""
    paths = engine_paths()
    if our_pid(paths) and _answers(paths.url):
        return paths.url
    docker_host = os.environ.get("DOCKER_HOST")
    if docker_host and docker_host != paths.url:
        return docker_host if _answers(docker_host, _client_vars()) else None
    return SYSTEM_SOCKET_URL if _answers(SYSTEM_SOCKET_URL) else None


def docker_env() -> dict[str, str]:
    """Environment that points a `docker` CLI (BuildKit builds) at the engine gpurig uses."""
    url = endpoint()
    if url is None:
        raise GpurigError(NO_ENGINE)
    env = {"DOCKER_HOST": url}
    if url == os.environ.get("DOCKER_HOST"):
        env.update(_client_vars())
    return env


def docker_client() -> docker.DockerClient:
    """A Docker SDK client for the engine that answers; GpurigError when none does."""
    return docker.DockerClient.from_env(environment=docker_env(), timeout=CLIENT_TIMEOUT_S)


def ensure_engine() -> EngineStatus:
    """Use the engine that answers, or start ours. Idempotent, and safe to race."""
    paths = engine_paths()
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (paths.root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two callers at once must not start two dockerds
        try:
            return _ensure_engine(paths)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_engine(paths: EnginePaths) -> EngineStatus:
    pid = our_pid(paths)
    if pid:
        if not _wait_until_answers(paths.url, START_TIMEOUT_S):
            raise GpurigError(
                f"our dockerd (pid {pid}) does not answer on {paths.socket}: "
                f"stop it with `gpurig sandbox engine --stop`, then retry. {_log_tail(paths)}"
            )
        return EngineStatus(paths.url, ours=True, pid=pid)
    docker_host = os.environ.get("DOCKER_HOST")
    if docker_host and docker_host != paths.url:
        if _answers(docker_host, _client_vars()):
            return EngineStatus(docker_host, ours=False)
        raise GpurigError(
            f"DOCKER_HOST={docker_host} does not answer: start that engine, "
            "or unset DOCKER_HOST to let gpurig start its own"
        )
    if _answers(SYSTEM_SOCKET_URL):
        return EngineStatus(SYSTEM_SOCKET_URL, ours=False)
    return _start(paths)


def stop_engine() -> int | None:
    """Stop our dockerd (by its pidfile PID only); returns the PID, or None if it was not up."""
    paths = engine_paths()
    pid = our_pid(paths)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)  # dockerd stops its containers on TERM
    if not _wait_for_exit(pid, STOP_TIMEOUT_S):
        log.warning("dockerd (pid %d) ignored TERM for %.0f s: killing it", pid, STOP_TIMEOUT_S)
        os.kill(pid, signal.SIGKILL)
        _wait_for_exit(pid, 5.0)
    unmount_under(paths.exec_root)  # dockerd leaves its netns mount behind
    return pid


def _start(paths: EnginePaths) -> EngineStatus:
    paths.check()
    require_root("starting a Docker engine")
    dockerd = ensure_command("dockerd", "docker.io")
    if _answers(SYSTEM_SOCKET_URL):  # installing docker.io may have started the system engine
        return EngineStatus(SYSTEM_SOCKET_URL, ours=False)
    for directory in (paths.root, paths.data_root, paths.exec_root):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [
        dockerd,
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        f"--data-root={paths.data_root}",
        f"--exec-root={paths.exec_root}",
        f"--host={paths.url}",
        f"--pidfile={paths.pidfile}",
    ]
    began = time.monotonic()
    with paths.log.open("ab") as log_file:
        # A session of its own: the engine outlives this command and ignores its Ctrl-C.
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PATH": path_with_sbin()},  # for containerd, runc, docker-init
        )
    deadline = began + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GpurigError(
                f"dockerd exited with status {process.returncode} while starting. "
                f"{_log_tail(paths)}"
            )
        if _answers(paths.url):
            return EngineStatus(
                paths.url, ours=True, pid=process.pid, started_in_s=time.monotonic() - began
            )
        time.sleep(0.2)
    process.terminate()  # the dockerd this call started, by its own PID
    process.wait(timeout=15)
    raise GpurigError(
        f"dockerd did not answer within {START_TIMEOUT_S:.0f} s on {paths.socket}. "
        f"{_log_tail(paths)}"
    )


def _answers(url: str, extra_env: dict[str, str] | None = None) -> bool:
    environment = {"DOCKER_HOST": url, **(extra_env or {})}
    try:
        client = docker.DockerClient.from_env(environment=environment, timeout=PING_TIMEOUT_S)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except (DockerException, RequestException, OSError):
        return False
    finally:
        client.close()


def _wait_until_answers(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _answers(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap it if this process is its parent
            os.waitpid(pid, os.WNOHANG)
        if not _is_dockerd(pid):  # gone, a zombie (empty cmdline), or the PID was reused
            return True
        time.sleep(0.2)
    return False


def _is_dockerd(pid: int) -> bool:
    try:
        return b"dockerd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _client_vars() -> dict[str, str]:
    return {name: os.environ[name] for name in _CLIENT_VARS if name in os.environ}


def _log_tail(paths: EnginePaths, lines: int = 5) -> str:
    try:
        tail = paths.log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return f"(no log at {paths.log})"
    return f"Last log lines ({paths.log}): " + " | ".join(tail)
