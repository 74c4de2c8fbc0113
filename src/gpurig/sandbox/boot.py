"""How a sandbox host boots: systemd as PID 1 (the default, like a cloud VM) or sshd alone.

Both kinds get, before their container starts, one archive: the controller key, the test
doubles, and an sshd_config.d file that binds sshd to 127.0.0.1:PORT only (all hosts share the
machine's network namespace). A systemd host boots the unprivileged-container recipe checked on
this machine (`container=docker`, /sys/fs/cgroup read-only, tmpfs on /run and /run/lock); its
sshd is ssh.service, after gpurig-host-keys.service made its keys on the first boot.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

from docker.models.containers import Container

from gpurig.errors import GpurigError
from gpurig.sandbox.rootfs import SANDBOX_UID, SANDBOX_USER

INITS = ("systemd", "none")
LOOPBACK = "127.0.0.1"
INOTIFY_LIMIT = "/proc/sys/fs/inotify/max_user_instances"
SYSTEMD_GAVE_UP = 255  # PID 1's exit status when it cannot allocate its manager
LISTEN_CONF = "etc/ssh/sshd_config.d/60-gpurig-listen.conf"
# An empty machine-id marks a first boot, as on a cloud image: new host keys then, and only
# then, so a restarted host keeps the keys known_hosts trusts (a VM reboot does too).
NO_INIT_SCRIPT = """\
if [ ! -s /etc/machine-id ]; then
  rm -f /etc/ssh/ssh_host_*
  tr -d - < /proc/sys/kernel/random/uuid > /etc/machine-id
fi
ssh-keygen -A
mkdir -p -m 0755 /run/sshd
exec /usr/sbin/sshd -D -e
"""
# First boot like a cloud VM: apt-daily (lists) then apt-daily-upgrade (unattended-upgrades,
# which takes the dpkg lock) start as the host comes up, not at the timers' random hour.
FIRST_BOOT_APT_UNIT = """\
[Unit]
Description=apt-daily and unattended-upgrades on first boot, as on a fresh cloud VM
After=network.target
# Once per host (systemd 252 does not count an empty machine-id as a first boot).
ConditionPathExists=!/var/lib/gpurig-first-boot-apt

[Service]
Type=oneshot
ExecStart=/bin/systemctl start --no-block apt-daily.service apt-daily-upgrade.service
ExecStartPost=/bin/touch /var/lib/gpurig-first-boot-apt
"""
AUTO_UPGRADES = """\
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::RandomSleep "0";
"""
FIRST_BOOT_APT = "etc/systemd/system/gpurig-first-boot-apt.service"
MULTI_USER_WANTS = "etc/systemd/system/multi-user.target.wants"


# A systemd host is a VM stand-in: a reboot ends its PID 1 and the engine starts the same
# container again (restart_policy below), with its disk, host keys and port. The GPU fact reads
# this file so that the driver stage's reboot runs here as on a VM; a container without it
# (a real one) still gets "gpurig cannot reboot this host".
VM_STANDIN_TEXT = """\
# Written by `gpurig sandbox up`: this container stands in for a VM. Its engine restarts it
# when a reboot ends its PID 1 (restart policy unless-stopped): same disk, host keys and port.
"""


class PortTaken(Exception):
    """Another process bound the port between our probe and sshd's bind."""


def container_options(init: str, pretend_driver: bool = False) -> dict[str, Any]:
    """docker create arguments (besides image, name, labels, network) for this kind of host;
    a pretend driver gets its own /sys/module (see doubles.pretend_driver_files)."""
    if init == "none":
        # A real PID 1 reaps what deploys leave running, as init does.
        return {"command": ["/bin/sh", "-ec", NO_INIT_SCRIPT], "init": True}
    tmpfs = {"/run": "", "/run/lock": ""}
    if pretend_driver:
        tmpfs["/sys/module"] = ""
    return {
        "command": ["/lib/systemd/systemd"],
        "environment": {"container": "docker"},
        "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
        "tmpfs": tmpfs,
        "stop_signal": "SIGRTMIN+3",  # systemd's halt; it ignores the default SIGTERM
        # A reboot inside ends PID 1 with status 0, as a poweroff does: the engine starts the
        # same container again (name, port, host keys, disk), except after `docker stop`.
        "restart_policy": {"Name": "unless-stopped"},
    }


def host_archive(
    public_key: str,
    files: dict[str, tuple[int, str]],
    port: int,
    *,
    first_boot_apt: bool = False,
    links: dict[str, str] | None = None,
) -> bytes:
    """A tar of what a host gets before it starts: controller key, sshd's address, doubles
    (and `links`, path -> target, as `systemctl enable` makes them)."""
    entries: list[tuple[str, int, int, str]] = [
        (f"home/{SANDBOX_USER}/.ssh/authorized_keys", 0o600, SANDBOX_UID, public_key + "\n"),
        (LISTEN_CONF, 0o644, 0, f"Port {port}\nListenAddress {LOOPBACK}\n"),
    ]
    if first_boot_apt:
        entries += [
            (FIRST_BOOT_APT, 0o644, 0, FIRST_BOOT_APT_UNIT),
            ("etc/apt/apt.conf.d/20auto-upgrades", 0o644, 0, AUTO_UPGRADES),
        ]
    entries += [(path.lstrip("/"), mode, 0, text) for path, (mode, text) in files.items()]
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, mode, owner, text in entries:
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid, info.mtime = (
                len(data),
                mode,
                owner,
                owner,
                now,
            )
            tar.addfile(info, io.BytesIO(data))
        symlinks = dict(links or {})
        if first_boot_apt:  # enabled, as `systemctl enable` would link it
            symlinks[f"{MULTI_USER_WANTS}/gpurig-first-boot-apt.service"] = f"/{FIRST_BOOT_APT}"
        for path, target in symlinks.items():
            link = tarfile.TarInfo(path.lstrip("/"))
            link.type, link.linkname, link.mtime = tarfile.SYMTYPE, target, now
            tar.addfile(link)
    return buffer.getvalue()


def wait_for_sshd(container: Container, port: int, init: str, timeout_s: float) -> None:
    """Until the host's own sshd listens on its port; PortTaken when another process has it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running"):
            logs = container.logs().decode(errors="replace")
            if "Address already in use" in logs:
                raise PortTaken(port)
            tail = " | ".join(logs.strip().splitlines()[-4:])
            raise GpurigError(
                f"sandbox host {container.name} exited while booting: {tail}"
                + systemd_hint(container, init)
            )
        if container.status == "running" and _sshd_ready(container, port, init):
            return
        time.sleep(0.2)
    raise GpurigError(
        f"sshd in {container.name} did not answer on {LOOPBACK}:{port} within {timeout_s:.0f} s:"
        f" see `docker logs {container.name}`"
        + ("" if init == "none" else f" and `docker exec {container.name} journalctl -b`")
        + systemd_hint(container, init)
    )


def systemd_hint(container: Container, init: str) -> str:
    """Why a systemd host did not bring sshd up, where it is the cause met on this machine: the
    inotify instances ran out (each systemd host takes about six, and the per-user limit counts
    every container's). Then systemd either exits at once (PID 1 logs nowhere without a
    terminal) or boots without the units that need inotify, ssh among them (its journal says
    so). "" for any other cause: the caller's message stands alone."""
    if init == "none":
        return ""
    container.reload()
    if container.attrs.get("State", {}).get("ExitCode") == SYSTEMD_GAVE_UP:
        cause = "systemd (PID 1) exited at boot: other systemd hosts or containers may hold"
    else:
        status, out = container.exec_run(["journalctl", "-b", "--no-pager", "-o", "cat"])
        said = out.decode(errors="replace") if status == 0 else ""
        if "Failed to create inotify object: Too many open files" not in said:
            return ""
        cause = "systemd found no free inotify instance: other systemd hosts or containers hold"
    try:
        limit = Path(INOTIFY_LIMIT).read_text().strip()
    except OSError:
        limit = "?"
    return (
        f"; {cause} every inotify instance (fs.inotify.max_user_instances={limit}, about six"
        " per systemd host): remove some (`gpurig sandbox down`) or raise the limit with"
        " `sysctl -w fs.inotify.max_user_instances=1024`"
    )


def _sshd_ready(container: Container, port: int, init: str) -> bool:
    if init == "none":  # sshd's own log says so, not just anyone on the port
        logs: bytes = container.logs()
        return f"Server listening on {LOOPBACK} port {port}".encode() in logs
    # ssh.service is Type=notify: active means it listens. Before systemd is up this fails.
    state: str = (
        container.exec_run(["systemctl", "is-active", "ssh.service"]).output.decode().strip()
    )
    if state != "failed":
        return state == "active"
    journal = container.exec_run(["journalctl", "-b", "-u", "ssh.service", "-n", "20"])
    text = journal.output.decode(errors="replace")
    if "Address already in use" in text:
        raise PortTaken(port)
    tail = " | ".join(text.strip().splitlines()[-4:])
    raise GpurigError(f"ssh.service failed in {container.name}: {tail}")
