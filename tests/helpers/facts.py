"""Host facts for tests, built in one place: a Debian 12 x86_64 host as preflight sees it."""

from __future__ import annotations

from gpurig.model.host import HostFacts


def host_facts(**fields: object) -> HostFacts:
    """Python 3.11, glibc 2.36, 100 GB free, 64 GB of memory, sudo and systemd, no GPU;
    `fields` change any of it."""
    base: dict[str, object] = {
        "os_id": "debian",
        "os_version": "12",
        "arch": "x86_64",
        "python3": "3.11",
        "glibc": "2.36",
        "free_disk_gb": 100.0,
        "memory_gb": 64.0,
        "sudo": True,
        "systemd": True,
    }
    return HostFacts(**{**base, **fields})  # type: ignore[arg-type]
