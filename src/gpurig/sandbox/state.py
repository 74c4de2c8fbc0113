"""A fleet's state dir: hosts.json (the source of truth) and the files generated from it.

hosts.json records each host's fresh host key, so known_hosts and the Ansible inventory can
always be regenerated from it; all three are rewritten together, each atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from gpurig.errors import GpurigError

if TYPE_CHECKING:
    import pydantic

# pydantic, yaml and cryptography are imported where they are used: the inventory imports this
# module on every deploy, and `gpurig deploy` itself (which only names the hosts) never needs them.

SANDBOX_GROUP = "sandbox"
# The state dir's path goes into Ansible inventory variables and ssh's options: nothing in it
# may read as a template, split into two words or be expanded by a shell.
_UNSAFE_PATH = re.compile(r"[\s{}%$'\"`\\]")


@dataclass(frozen=True)
class SandboxHost:
    name: str  # sandbox-N, stable for the host's life
    hostname: str  # always 127.0.0.1: hosts share the machine's network namespace
    port: int
    user: str
    os: str  # Debian suite
    container: str
    pretend_gpu: str | None = None
    pretend_secure_boot: bool = False
    host_key: str = ""  # "ssh-ed25519 AAAA...", read from the host after its sshd started
    init: str = "none"  # "systemd" or "none" (sshd alone); hosts.json from before says none

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    def known_hosts_line(self) -> str:
        return f"[{self.hostname}]:{self.port} {self.host_key}"


@cache
def _hosts_adapter() -> pydantic.TypeAdapter[list[SandboxHost]]:
    import pydantic

    return pydantic.TypeAdapter(list[SandboxHost])


class StateDir:
    """Files of one fleet. Every host of a fleet shares its controller key and known_hosts."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        # Labels this fleet's containers, so `down` removes exactly these.
        self.fleet_id = hashlib.sha256(str(self.path).encode()).hexdigest()[:12]

    @property
    def hosts_file(self) -> Path:
        return self.path / "hosts.json"

    @property
    def key_file(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def public_key_file(self) -> Path:
        return self.path / "id_ed25519.pub"

    @property
    def known_hosts_file(self) -> Path:
        return self.path / "known_hosts"

    @property
    def ansible_inventory_file(self) -> Path:
        return self.path / "ansible_inventory.yml"

    @property
    def _lock_file(self) -> Path:
        return self.path / ".lock"

    def _files(self) -> tuple[Path, ...]:
        return (
            self.hosts_file,
            self.known_hosts_file,
            self.ansible_inventory_file,
            self.key_file,
            self.public_key_file,
            self._lock_file,
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise `up` and `down` on one state dir (two test sessions, two shells)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock_file.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load_hosts(self) -> list[SandboxHost]:
        import pydantic

        try:
            text = self.hosts_file.read_text()
        except FileNotFoundError:
            return []
        try:
            return _hosts_adapter().validate_json(text)
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise GpurigError(
                f"{self.hosts_file} is not a sandbox host list ({where}: {first['msg']}): "
                "run `gpurig sandbox down` to reset this state dir"
            ) from None

    def check_path(self) -> None:
        """Before a fleet starts, and before its files are written."""
        if _UNSAFE_PATH.search(str(self.path)):
            raise GpurigError(
                f"sandbox state dir {str(self.path)[:200]!r}: choose a path without spaces, "
                "quotes, $, %, braces or backslashes (it goes into Ansible's inventory)"
            )

    def save_hosts(self, hosts: list[SandboxHost]) -> None:
        import yaml

        self.check_path()
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.hosts_file, json.dumps([asdict(h) for h in hosts], indent=2) + "\n")
        _write(self.known_hosts_file, "".join(h.known_hosts_line() + "\n" for h in hosts))
        _write(self.ansible_inventory_file, yaml.safe_dump(self.ansible_inventory(hosts)))

    def ensure_key(self) -> str:
        """The controller's public key line, creating the ed25519 pair on first use."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.check_path()
        if not self.key_file.exists():
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            private = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            comment = f" gpurig-sandbox-{self.fleet_id}"
            _write(self.public_key_file, public.decode() + comment + "\n")
            _write(self.key_file, private.decode())
        return self.public_key_file.read_text().strip()

    def ansible_inventory(self, hosts: list[SandboxHost]) -> dict[str, object]:
        """Group `sandbox` with the connection settings, plus one group per Debian suite."""
        ssh_args = (
            f"-o UserKnownHostsFile={self.known_hosts_file} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes"
        )
        children: dict[str, object] = {
            SANDBOX_GROUP: {
                "hosts": {
                    h.name: {
                        "ansible_host": h.hostname,
                        "ansible_port": h.port,
                        "ansible_user": h.user,
                    }
                    for h in hosts
                },
                "vars": {
                    "ansible_ssh_private_key_file": str(self.key_file),
                    "ansible_ssh_common_args": ssh_args,
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
            }
        }
        for suite in sorted({h.os for h in hosts}):
            children[suite] = {"hosts": {h.name: None for h in hosts if h.os == suite}}
        return {"all": {"children": children}}

    def remove_files(self) -> None:
        for path in self._files():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.rmdir()  # only when nothing else lives there


def _write(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see half a file; mode 0600."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, path)
