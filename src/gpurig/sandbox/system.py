"""Controller-side system packages the sandbox needs (docker.io, debootstrap)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from gpurig.errors import GpurigError

log = logging.getLogger(__name__)

_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise GpurigError(f"{why} needs root: run it as root (or with sudo)")


def ensure_command(command: str, package: str) -> str:
    """Return the path of `command`, installing its Debian `package` first if it is missing."""
    found = shutil.which(command, path=path_with_sbin())
    if found:
        return found
    require_root(f"installing {package} (for `{command}`)")
    if not shutil.which("apt-get"):
        raise GpurigError(
            f"`{command}` is missing and this is not a Debian system: install {package}"
        )
    log.warning("installing %s (for `%s`)", package, command)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    # A fresh machine may have no package lists yet: update once, then retry.
    if _apt(install).returncode != 0:
        _apt(["apt-get", "update", "-q"])
        result = _apt(install)
        if result.returncode != 0:
            tail = result.stdout.strip().splitlines()[-3:]
            raise GpurigError(f"`apt-get install {package}` failed: {' / '.join(tail)}")
    found = shutil.which(command, path=path_with_sbin())
    if not found:
        raise GpurigError(f"{package} is installed but `{command}` is not on PATH")
    return found


def _apt(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=_APT_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )


def unmount_under(path: Path) -> list[str]:
    """Lazily unmount everything mounted below `path`; returns what is still mounted."""
    prefix = f"{path}/"
    mounts = [
        fields[1]
        for fields in (line.split() for line in Path("/proc/mounts").read_text().splitlines())
        if fields[1].startswith(prefix)
    ]
    for mount in sorted(mounts, reverse=True):  # children before parents
        subprocess.run(["umount", "--lazy", mount], check=False, capture_output=True)
    return [mount for mount in mounts if os.path.ismount(mount)]


def path_with_sbin() -> str:
    """PATH plus the sbin dirs, which a non-login root shell may lack (dockerd, debootstrap)."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    extra = [p for p in ("/usr/local/sbin", "/usr/sbin", "/sbin") if p not in parts]
    return os.pathsep.join([*parts, *extra])
