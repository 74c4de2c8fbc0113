"""How sandbox hosts boot: systemd's container recipe, and the archive each host gets first."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from gpurig.errors import UsageError
from gpurig.sandbox import Fleet, boot, doubles, rootfs
from gpurig.sandbox.boot import container_options, host_archive


def members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {info.name: info for info in tar.getmembers()}


def text(archive: bytes, name: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read().decode()


def test_systemd_hosts_boot_the_unprivileged_recipe() -> None:
    options = container_options("systemd")
    assert options["command"] == ["/lib/systemd/systemd"]
    assert options["environment"] == {"container": "docker"}
    assert options["volumes"] == {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}}
    assert set(options["tmpfs"]) == {"/run", "/run/lock"}
    assert options["stop_signal"] == "SIGRTMIN+3"
    assert "privileged" not in options
    assert "init" not in options


def test_no_init_hosts_run_sshd_under_a_reaper() -> None:
    options = container_options("none")
    assert options["init"] is True
    assert options["command"][-1].rstrip().endswith("exec /usr/sbin/sshd -D -e")


def test_sshd_listens_on_loopback_and_the_hosts_port_only() -> None:
    archive = host_archive("ssh-ed25519 AAAA controller", {}, 42022)
    conf = text(archive, "etc/ssh/sshd_config.d/60-gpurig-listen.conf")
    assert conf.splitlines() == ["Port 42022", "ListenAddress 127.0.0.1"]
    key = members(archive)["home/debian/.ssh/authorized_keys"]
    assert (key.mode, key.uid) == (0o600, 1000)
    assert not any("apt" in name for name in members(archive))


def test_first_boot_apt_is_enabled_through_the_archive() -> None:
    archive = host_archive("ssh-ed25519 AAAA controller", {}, 42022, first_boot_apt=True)
    link = members(archive)[
        "etc/systemd/system/multi-user.target.wants/gpurig-first-boot-apt.service"
    ]
    assert link.issym()
    assert link.linkname == "/etc/systemd/system/gpurig-first-boot-apt.service"
    unit = text(archive, "etc/systemd/system/gpurig-first-boot-apt.service")
    assert "apt-daily.service apt-daily-upgrade.service" in unit
    assert 'Unattended-Upgrade "1"' in text(archive, "etc/apt/apt.conf.d/20auto-upgrades")


def test_the_image_boots_systemd_and_silences_what_would_share_the_network() -> None:
    for package in ("systemd", "systemd-sysv", "dbus", "unattended-upgrades"):
        assert package in rootfs.SANDBOX_PACKAGES
    for unit in ("systemd-networkd.service", "systemd-resolved.service", "getty.target"):
        assert unit in rootfs.MASKED_UNITS
    assert f"systemctl mask {' '.join(rootfs.MASKED_UNITS)}" in rootfs.SANDBOX_SETUP
    assert "systemctl disable apt-daily.timer apt-daily-upgrade.timer" in rootfs.SANDBOX_SETUP
    assert "Before=ssh.service" in rootfs.HOST_KEYS_UNIT


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"init": "upstart"}, "unknown init 'upstart'"),
        ({"init": "none", "first_boot_apt": True}, "first-boot apt needs systemd hosts"),
        (
            {"init": "none", "pretend_gpu": "H100", "pretend_driver": "535.261.03"},
            "a pretend driver needs systemd hosts",
        ),
        ({"pretend_driver": "535.261.03"}, "--pretend-driver needs --pretend-gpu"),
        ({"pretend_gpu": "H100", "pretend_driver": "latest"}, "give a version such as"),
    ],
)
def test_up_refuses_what_cannot_boot(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Fleet(tmp_path / "fleet").up(1, **options)


def test_a_pretend_driver_gets_its_own_sys_module_and_a_boot_unit() -> None:
    """A restart empties the tmpfs (a reboot unloads every module); the linked unit loads the
    installed version at the next boot."""
    assert container_options("systemd", pretend_driver=True)["tmpfs"]["/sys/module"] == ""
    assert "/sys/module" not in container_options("systemd")["tmpfs"]
    link = doubles.PRETEND_DRIVER_LINK
    archive = host_archive("ssh-ed25519 AAAA key", {}, 2222, links={link: "/unit"})
    found = members(archive)[link.lstrip("/")]
    assert (found.issym(), found.linkname) == (True, "/unit")
    unit = doubles.PRETEND_DRIVER_UNIT_TEXT
    assert f"ExecStart=/bin/cp {doubles.PRETEND_DRIVER_PATH} /sys/module/nvidia/version" in unit
    assert link.rsplit("/", 2)[1] == "sysinit.target.wants"
    assert "WantedBy=sysinit.target" in unit


class _Container:
    """What systemd_hint reads of a container: its state and its journal."""

    def __init__(self, exit_code: int, journal: str) -> None:
        self.attrs = {"State": {"ExitCode": exit_code}, "RestartCount": 1}
        self.journal = journal

    def reload(self) -> None:
        pass

    def exec_run(self, command: list[str]) -> tuple[int, bytes]:
        assert command[0] == "journalctl"
        return 0, self.journal.encode()


INOTIFY_LINE = "Failed to create inotify object: Too many open files\n"


@pytest.mark.parametrize(
    ("init", "exit_code", "journal", "named"),
    [
        ("systemd", 255, "", "systemd (PID 1) exited at boot"),
        ("systemd", 0, "Starting ssh.service\n" + INOTIFY_LINE, "no free inotify instance"),
        ("systemd", 0, "Starting ssh.service\n", None),  # another cause: no guess
        ("systemd", 1, "", None),  # a reboot's or a crash's exit is not systemd giving up
        ("none", 255, INOTIFY_LINE, None),
    ],
)
def test_a_systemd_host_out_of_inotify_instances_is_named(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    init: str,
    exit_code: int,
    journal: str,
    named: str | None,
) -> None:
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    monkeypatch.setattr(boot, "INOTIFY_LIMIT", str(limit))
    hint = boot.systemd_hint(_Container(exit_code, journal), init)  # type: ignore[arg-type]
    if named is None:
        assert hint == ""
    else:
        assert named in hint
        assert "fs.inotify.max_user_instances=128" in hint
        assert "sysctl -w fs.inotify.max_user_instances=1024" in hint
