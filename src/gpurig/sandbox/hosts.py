"""Sandbox hosts: containers that behave like fresh Debian cloud VMs, reached over real SSH.

Each host is a container from gpurig/sandbox:SUITE on the machine's network (the engine has no
bridge), booting systemd (or, with init="none", only sshd: see boot.py), with its own sshd on
127.0.0.1:PORT, fresh host keys, and a `debian` sudo user that trusts the fleet's controller
key. A fleet is one state dir; its containers carry its label.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import docker
import paramiko
from docker.errors import NotFound
from docker.models.containers import Container

from gpurig.errors import GpurigError, UsageError
from gpurig.hostlayout import VM_STANDIN_MARKER
from gpurig.sandbox import doubles
from gpurig.sandbox.boot import (
    INITS,
    LOOPBACK,
    VM_STANDIN_TEXT,
    PortTaken,
    container_options,
    host_archive,
    wait_for_sshd,
)
from gpurig.sandbox.engine import docker_client
from gpurig.sandbox.paths import sandbox_dir
from gpurig.sandbox.remote import ssh_run
from gpurig.sandbox.rootfs import SANDBOX_USER, SUITES, ensure_base_image
from gpurig.sandbox.state import SandboxHost, StateDir

log = logging.getLogger(__name__)

LABEL = "gpurig.sandbox"  # value: the fleet id (a hash of the state dir)
HOST_LABEL = "gpurig.sandbox.host"
DIR_LABEL = "gpurig.sandbox.dir"
READY_TIMEOUT_S = 60.0  # a systemd boot on a busy 2-core machine takes a few seconds
PORT_ATTEMPTS = 3
MAX_PARALLEL = 8
T = TypeVar("T")
R = TypeVar("R")


class Fleet:
    """The sandbox hosts of one state dir."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state = StateDir(state_dir or sandbox_dir())
        self._client: docker.DockerClient | None = None

    @property
    def state_dir(self) -> Path:
        return self.state.path

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    @property
    def hosts(self) -> list[SandboxHost]:
        return self.state.load_hosts()

    def host(self, name: str | SandboxHost) -> SandboxHost:
        wanted = name.name if isinstance(name, SandboxHost) else name
        for host in self.hosts:
            if host.name == wanted:
                return host
        raise UsageError(
            f"no sandbox host {wanted!r} in {self.state_dir}: see `gpurig sandbox list`"
        )

    def env(self) -> dict[str, str]:
        """Variables that point gpurig's inventory (pyinfra, Ansible) at this fleet."""
        return {"GPURIG_SANDBOX_DIR": str(self.state_dir)}

    def up(
        self,
        count: int = 1,
        *,
        os: str = "bookworm",
        pretend_gpu: str | None = None,
        pretend_secure_boot: bool = False,
        init: str = "systemd",
        first_boot_apt: bool = False,
        pretend_driver: str | None = None,
        image: str | None = None,
    ) -> list[SandboxHost]:
        """Start `count` more hosts and wait until each accepts a real SSH login.

        init="none" runs sshd alone (no systemd); first_boot_apt starts apt-daily and
        unattended-upgrades as a systemd host comes up, so a deploy meets a held dpkg lock;
        pretend_driver (a version) loads a pretend NVIDIA module of that version at each boot.
        image: start from this image instead of the sandbox image (bench/: copies of a
        deployed host, committed; they keep its host key, which known_hosts pins per port).
        """
        if count < 1:
            raise UsageError(f"host count must be 1 or more, not {count}")
        if os not in SUITES:
            raise UsageError(f"unknown Debian suite {os!r}: use one of {', '.join(SUITES)}")
        if init not in INITS:
            raise UsageError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
        if first_boot_apt and init == "none":
            raise UsageError("first-boot apt needs systemd hosts (it starts apt-daily's units)")
        if pretend_driver and init == "none":
            raise UsageError("a pretend driver needs systemd hosts (a boot unit loads it)")
        files = doubles.host_files(pretend_gpu, pretend_secure_boot)  # checks the SKU early
        files |= doubles.pretend_driver_files(pretend_gpu, pretend_driver)
        links = {doubles.PRETEND_DRIVER_LINK: doubles.PRETEND_DRIVER_UNIT} if pretend_driver else {}
        if init == "systemd":
            files[VM_STANDIN_MARKER] = (0o644, VM_STANDIN_TEXT)
        sku = doubles.resolve_sku(pretend_gpu).name if pretend_gpu else None
        tag = image or ensure_base_image(os, "sandbox", client=self.client).tag
        with self.state.locked():
            public_key = self.state.ensure_key()
            existing = self.state.load_hosts()
            self._remove_orphans(existing)
            first = 1 + max((_index(h.name) for h in existing), default=0)
            names = [f"sandbox-{first + i}" for i in range(count)]
            ports = free_ports(count, exclude={h.port for h in existing})

            def start(name_port: tuple[str, int]) -> SandboxHost:
                name, port = name_port
                host = SandboxHost(
                    name, LOOPBACK, port, SANDBOX_USER, os, "", sku, pretend_secure_boot, "", init
                )

                def archive(port: int) -> bytes:
                    return host_archive(
                        public_key, files, port, first_boot_apt=first_boot_apt, links=links
                    )

                return self._start_host(host, tag, archive, bool(pretend_driver))

            started = _parallel(start, zip(names, ports, strict=True), on_error=self._remove)
            self.state.save_hosts([*existing, *started])
            try:
                _parallel(self._wait_for_login, started)
            except Exception:
                self._remove(started)
                self.state.save_hosts(existing)
                raise
            return started

    def down(self) -> int:
        """Remove this fleet's containers and state files; returns how many containers."""
        with self.state.locked():
            hosts = self.state.load_hosts()
            try:
                containers = self._containers()
            except GpurigError:
                if hosts:
                    raise
                containers = []  # nothing recorded and no engine: only files to remove
            for container in containers:
                container.remove(force=True, v=True)
            self.state.remove_files()
        return len(containers)

    def stop(self, host: str | SandboxHost) -> None:
        """Stop one host's container (a host that went down, for fault tests)."""
        self._container(self.host(host)).stop(timeout=5)

    def start(self, host: str | SandboxHost) -> None:
        """Start a stopped host again, like a reboot: same port, same host keys."""
        target = self.host(host)
        container = self._container(target)
        container.start()
        wait_for_sshd(container, target.port, target.init, READY_TIMEOUT_S)
        self._wait_for_login(target)

    def reboot(self, host: str | SandboxHost, timeout_s: float = READY_TIMEOUT_S) -> None:
        """`systemctl reboot` inside a systemd host, then wait (bounded) until it logs in again."""
        target = self.host(host)
        if target.init != "systemd":
            raise UsageError(f"{target.name} runs no init: only systemd hosts reboot")
        container = self._container(target)
        booted = container.attrs["State"]["StartedAt"]
        with suppress(paramiko.SSHException, OSError):  # the session may end with the host
            self.ssh(target, "sudo -n systemctl reboot", timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            container.reload()
            state = container.attrs["State"]
            if state["Running"] and state["StartedAt"] != booted:
                break
            if time.monotonic() > deadline:
                raise GpurigError(
                    f"{target.name} did not come back within {timeout_s:.0f} s of a reboot "
                    f"(container {container.name} is {container.status})"
                )
            time.sleep(0.2)
        wait_for_sshd(container, target.port, target.init, max(1.0, deadline - time.monotonic()))
        self._wait_for_login(target)

    def ssh(self, host: str | SandboxHost, command: str, timeout: float = 600.0) -> tuple[int, str]:
        """Run `command` on a host as its user: (exit status, stdout and stderr together)."""
        target = self.host(host)
        return ssh_run(
            target, self.state.key_file, self.state.known_hosts_file, command, timeout=timeout
        )

    def container_states(self) -> dict[str, str]:
        """Host name -> container status (running, exited...) as the engine reports it."""
        return {c.labels.get(HOST_LABEL, c.name): c.status for c in self._containers()}

    def _start_host(
        self,
        host: SandboxHost,
        image: str,
        archive: Callable[[int], bytes],
        pretend_driver: bool = False,
    ) -> SandboxHost:
        """Create, fill and start one host's container; a new port if another process won ours."""
        port = host.port
        for _attempt in range(PORT_ATTEMPTS):
            container = self.client.containers.create(
                image,
                name=f"gpurig-{self.state.fleet_id}-{host.name}",
                labels={
                    LABEL: self.state.fleet_id,
                    HOST_LABEL: host.name,
                    DIR_LABEL: str(self.state_dir),
                },
                network_mode="host",
                # Its own name, resolvable as cloud-init makes it (sudo looks it up).
                hostname=host.name,
                extra_hosts={host.name: LOOPBACK},
                detach=True,
                **container_options(host.init, pretend_driver),
            )
            try:
                container.put_archive("/", archive(port))
                container.start()
                wait_for_sshd(container, port, host.init, READY_TIMEOUT_S)
            except PortTaken:
                container.remove(force=True)
                port = free_ports(1)[0]
                continue
            except BaseException:
                container.remove(force=True)
                raise
            return replace(
                host, port=port, container=str(container.name), host_key=_host_key(container)
            )
        raise GpurigError(f"{host.name}: no free port for sshd after {PORT_ATTEMPTS} tries")

    def _wait_for_login(self, host: SandboxHost) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                status, output = self.ssh(host, "true", timeout=READY_TIMEOUT_S)
            except (paramiko.SSHException, OSError) as error:
                if time.monotonic() > deadline:
                    raise GpurigError(
                        f"{host.name}: SSH login to {host.address} failed: {error}"
                    ) from None
                time.sleep(0.3)
                continue
            if status != 0:
                raise GpurigError(f"{host.name}: `true` over SSH exited {status}: {output}")
            return

    def _containers(self) -> list[Container]:
        found: list[Container] = self.client.containers.list(
            all=True, filters={"label": f"{LABEL}={self.state.fleet_id}"}
        )
        return found

    def _container(self, host: SandboxHost) -> Container:
        try:
            container: Container = self.client.containers.get(host.container)
        except NotFound:
            raise GpurigError(
                f"{host.name}: container {host.container} is gone: "
                "run `gpurig sandbox down`, then `up` again"
            ) from None
        return container

    def _remove(self, hosts: Iterable[SandboxHost]) -> None:
        for host in hosts:
            with suppress(NotFound):
                self.client.containers.get(host.container).remove(force=True, v=True)

    def _remove_orphans(self, recorded: list[SandboxHost]) -> None:
        """Containers of this fleet that hosts.json lost (an interrupted `up`)."""
        names = {h.container for h in recorded}
        for container in self._containers():
            if container.name not in names:
                log.warning("removing orphaned sandbox container %s", container.name)
                container.remove(force=True, v=True)


def free_ports(count: int, exclude: set[int] | None = None) -> list[int]:
    """Ports free on 127.0.0.1 now; all probed at once so none is handed out twice."""
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
            if port not in (exclude or set()):
                ports.append(port)
        return ports


def _parallel(
    work: Callable[[T], R],
    items: Iterable[T],
    on_error: Callable[[list[R]], None] | None = None,
) -> list[R]:
    """Run `work` on every item in threads; on any failure, hand the successes to on_error."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, min(len(items), MAX_PARALLEL))) as pool:
        futures = [pool.submit(work, item) for item in items]
    failures = [error for future in futures if (error := future.exception()) is not None]
    done = [future.result() for future in futures if future.exception() is None]
    if failures:
        if on_error:
            on_error(done)
        raise failures[0]
    return done


def _host_key(container: Container) -> str:
    result = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
    fields = result.output.decode().split()
    if result.exit_code != 0 or len(fields) < 2:
        raise GpurigError(f"{container.name}: could not read its ed25519 host key")
    return f"{fields[0]} {fields[1]}"


def _index(name: str) -> int:
    _, _, number = name.rpartition("-")
    return int(number) if number.isdigit() else 0
