"""Facts the deploy reads: one round trip each, because a no-change re-run is mostly facts.

`HostProbe` gathers what preflight needs of the system before any change (OS, architecture,
Python, glibc, disk, memory, sudo, systemd, the dpkg lock, and the way to the Hugging Face Hub
when the models need it: gpurig.facts.hub); `to_host_facts` turns it into
`model.host.HostFacts`, whose GPU fields come from the GPU layer's `gpurig.facts.gpu.GpuHost`.
The others read the state the install stages converge: the venvs and their markers, pushed
wheels, uv's Python, managed files.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.facts import FactBase

from gpurig.model.host import HostFacts
from gpurig.plan.hashing import SHA256_FUNCTION, sha256_command

# Runs as the SSH user, without sudo, so that `sudo -n true` tests what it should.
PROBE_SCRIPT = r"""
if [ -r /etc/os-release ]; then . /etc/os-release; fi
echo "os_id=${ID:-unknown}"
echo "os_version=${VERSION_ID:-unknown}"
echo "arch=$(uname -m)"
if command -v python3 >/dev/null 2>&1; then
  # "Python 3.11.2": -V prints before the interpreter starts (a tenth of -c's CPU)
  v=$(python3 -V 2>&1); v=${v#Python }; echo "python3=${v%.*}"
fi
g=$(getconf GNU_LIBC_VERSION 2>/dev/null); echo "glibc=${g#* }"
p=__VENV__
while [ ! -e "$p" ]; do p=$(dirname "$p"); done
df -Pk "$p" | { read -r _; read -r _ _ _ a _; echo "disk_kb=$a"; }
# Builtins where a read will do: a converged host's probe is mostly the processes it starts.
while read -r k v _; do [ "$k" = MemTotal: ] && { echo "mem_kb=$v"; break; }; done < /proc/meminfo
while read -r k v _; do [ "$k" = Uid: ] && { echo "uid=$v"; break; }; done < /proc/self/status
# Preflight's probe tests sudo itself, in the one sudo that also reads the kernel log
# (gpurig.facts.preflight_probe): _gpurig_sudo is its answer.
if [ -n "${_gpurig_sudo:-}" ]; then echo "sudo=$_gpurig_sudo"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then echo sudo=1
else echo sudo=0; fi
if [ -d /run/systemd/system ]; then echo systemd=1; else echo systemd=0; fi
# Both locks' inodes in one stat and one read of /proc/locks ("1: POSIX ADVISORY WRITE <pid>
# <maj:min:inode> 0 EOF"); the front lock is named first, as apt takes it first.
i=$(stat -c %i /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock 2>/dev/null)
if [ -n "$i" ]; then
  pid=$(awk -v ids="$i" 'BEGIN {n = split(ids, id, "\n")}
    {for (f = 1; f < NF; f++) if ($f ~ /^[0-9]+$/) for (k = 1; k <= n; k++)
      if (!(k in held) && $(f+1) ~ ":" id[k] "$") held[k] = $f}
    END {for (k = 1; k <= n; k++) if (k in held) {print held[k]; exit}}' /proc/locks 2>/dev/null)
  if [ -n "$pid" ]; then c=; read -r c 2>/dev/null < "/proc/$pid/comm"; echo "dpkg_lock=$pid $c"; fi
fi
__HUB__
true
"""


@dataclass(frozen=True)
class Probe:
    """What `HostProbe` read, as text; `to_host_facts` interprets it."""

    values: dict[str, str]

    def get(self, key: str) -> str | None:
        return self.values.get(key) or None


class HostProbe(FactBase[Probe]):
    """The system part of preflight, in one round trip (key=value lines)."""

    def command(self, venv: str, hub: str = "") -> str:
        """hub: gpurig.facts.hub's lines when the plan needs the Hub test (the controller's
        `hub_probe`), else nothing: a host whose models need no Hub pays nothing."""
        return PROBE_SCRIPT.replace("__VENV__", shlex.quote(venv)).replace("__HUB__", hub)

    @staticmethod
    def default() -> Probe:
        return Probe({})

    def process(self, output: list[str]) -> Probe:
        values: dict[str, str] = {}
        for line in output:
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
        return Probe(values)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def to_host_facts(probe: Probe) -> HostFacts:
    """The system part; `gpurig.facts.gpu.apply` adds the GPU part."""
    return HostFacts(
        os_id=probe.get("os_id") or "unknown",
        os_version=probe.get("os_version") or "unknown",
        arch=probe.get("arch") or "unknown",
        python3=probe.get("python3"),
        glibc=probe.get("glibc"),
        free_disk_gb=_int(probe.get("disk_kb")) / 1024**2,
        memory_gb=_int(probe.get("mem_kb")) / 1024**2,
        sudo=probe.get("sudo") == "1",
        systemd=probe.get("systemd") == "1",
        hub=probe.values.get("hub"),
    )


def dpkg_lock_holder(probe: Probe) -> str | None:
    """'1234 unattended-upgr' when a process holds the dpkg lock."""
    return probe.get("dpkg_lock")


# The venvs: which one is live, which are complete (their marker), which are left over.
VENV_STATE_SCRIPT = r"""
link=__LINK__
dir=__DIR__
if [ -L "$link" ]; then echo "live=$(readlink "$link")"
elif [ -e "$link" ]; then echo "live_dir=$link"; fi
for d in "$dir"/*/; do
  [ -d "$d" ] || continue
  d=${d%/}
  echo "venv=$(stat -c %Y "$d") $d"
  [ -f "$d/__MARKER__" ] && echo "marker=$d $(tr -d '\n' < "$d/__MARKER__")"
done
true
"""


@dataclass(frozen=True)
class Venvs:
    live: str | None = None  # target of the live link
    live_is_dir: bool = False  # a real directory sits at the live path (not gpurig's link)
    mtimes: dict[str, int] = field(default_factory=dict)  # venv dir -> mtime
    markers: dict[str, str] = field(default_factory=dict)  # venv dir -> marker text


class VenvState(FactBase[Venvs]):
    def command(self, link: str, venvs_dir: str, marker: str) -> str:
        return (
            VENV_STATE_SCRIPT.replace("__LINK__", shlex.quote(link))
            .replace("__DIR__", shlex.quote(venvs_dir))
            .replace("__MARKER__", marker)
        )

    @staticmethod
    def default() -> Venvs:
        return Venvs()

    def process(self, output: list[str]) -> Venvs:
        live = None
        live_is_dir = False
        mtimes: dict[str, int] = {}
        markers: dict[str, str] = {}
        for line in output:
            key, _, value = line.partition("=")
            if key == "live":
                live = value
            elif key == "live_dir":
                live_is_dir = True
            elif key == "venv":
                mtime, _, path = value.partition(" ")
                mtimes[path] = _int(mtime)
            elif key == "marker":
                path, _, text = value.partition(" ")
                markers[path] = text
        return Venvs(live, live_is_dir, mtimes, markers)


class FileSizes(FactBase[dict[str, int]]):
    """name -> size of the files in a folder; a hash-pinned install checks the contents."""

    def command(self, directory: str) -> str:
        quoted = shlex.quote(directory)
        return f"[ -d {quoted} ] && find {quoted} -maxdepth 1 -type f -printf '%s %f\\n'; true"

    @staticmethod
    def default() -> dict[str, int]:
        return {}

    def process(self, output: list[str]) -> dict[str, int]:
        sizes = {}
        for line in output:
            size, _, name = line.partition(" ")
            if name:
                sizes[name] = _int(size)
        return sizes


class ManagedPython(FactBase[str | None]):
    """Path of a uv-managed Python of this version under install_dir, or None."""

    def command(self, uv: str, install_dir: str, version: str) -> str:
        return (
            f"UV_PYTHON_INSTALL_DIR={shlex.quote(install_dir)} {shlex.quote(uv)} python find "
            f"--managed-python --no-python-downloads {shlex.quote(version)} 2>/dev/null; true"
        )

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


def marker_json(data: dict[str, Any]) -> str:
    """The one text form of a venv marker: facts compare it byte for byte."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class FileInfo:
    mode: str  # octal, as stat prints it: 644
    owner: str  # user:group
    sha256: str


class FileState(FactBase[FileInfo | None]):
    """Mode, owner and sha256 of a file in one round trip; None when it is absent."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"{SHA256_FUNCTION}\nif [ -f {quoted} ]; then stat -c '%a %U:%G' {quoted} && "
            f"{{ {sha256_command(quoted)}; }}; fi"
        )

    @staticmethod
    def default() -> FileInfo | None:
        return None

    def process(self, output: list[str]) -> FileInfo | None:
        if len(output) < 2:
            return None
        mode, _, owner = output[0].strip().partition(" ")
        return FileInfo(mode, owner, output[1].strip())


@dataclass(frozen=True)
class Account:
    name: str
    home: str
    shell: str


class PasswdEntry(FactBase[Account | None]):
    """One user's passwd entry (getent: local files, LDAP...); None when there is none."""

    def command(self, user: str) -> str:
        return f"getent passwd {shlex.quote(user)} || true"

    @staticmethod
    def default() -> Account | None:
        return None

    def process(self, output: list[str]) -> Account | None:
        fields = output[0].strip().split(":") if output else []
        if len(fields) < 7:
            return None
        return Account(fields[0], fields[5], fields[6])


class ShellTest(FactBase[bool]):
    """Whether a shell test holds on the host (a Script step's `unless`): False on a fresh host."""

    @staticmethod
    def default() -> bool:
        return False

    def command(self, test: str) -> str:
        return f"if ( {test} ); then echo gpurig-test=yes; else echo gpurig-test=no; fi"

    def process(self, output: list[str]) -> bool:
        return "gpurig-test=yes" in output
