"""Base image recipes: apt sources per suite, and the hash that decides a rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpurig.errors import UsageError
from gpurig.sandbox import rootfs
from gpurig.sandbox.rootfs import Recipe

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
COMPONENTS = "main contrib non-free non-free-firmware"


def test_bookworm_sources_are_one_line_with_every_component() -> None:
    path, text = rootfs.apt_sources("bookworm", MIRROR, SECURITY, "unused")
    assert path == "etc/apt/sources.list"
    assert text.splitlines() == [
        f"deb {MIRROR} bookworm {COMPONENTS}",
        f"deb {MIRROR} bookworm-updates {COMPONENTS}",
        f"deb {SECURITY} bookworm-security {COMPONENTS}",
    ]


def test_trixie_sources_are_deb822() -> None:
    keyring = "/usr/share/keyrings/debian-archive-keyring.pgp"
    path, text = rootfs.apt_sources("trixie", MIRROR, SECURITY, keyring)
    assert path == "etc/apt/sources.list.d/debian.sources"
    stanzas = [dict(line.split(": ", 1) for line in s.splitlines()) for s in text.split("\n\n")]
    assert stanzas == [
        {
            "Types": "deb",
            "URIs": MIRROR,
            "Suites": "trixie trixie-updates",
            "Components": COMPONENTS,
            "Signed-By": keyring,
        },
        {
            "Types": "deb",
            "URIs": SECURITY,
            "Suites": "trixie-security",
            "Components": COMPONENTS,
            "Signed-By": keyring,
        },
    ]


def test_the_recipe_hash_follows_its_inputs() -> None:
    base = Recipe("bookworm", "base", MIRROR, SECURITY)
    assert base.digest() == Recipe("bookworm", "base", MIRROR, SECURITY).digest()
    changed = [
        Recipe("trixie", "base", MIRROR, SECURITY).digest(),
        Recipe("bookworm", "sandbox", MIRROR, SECURITY).digest(),
        Recipe("bookworm", "base", "http://mirror.example.com/debian", SECURITY).digest(),
        base.digest(parent="a-rebuilt-base"),
    ]
    assert base.digest() not in changed
    assert len(set(changed)) == len(changed)
    assert base.tag == "gpurig/base:bookworm"


def test_the_sandbox_setup_makes_a_cloud_like_host() -> None:
    setup = rootfs.SANDBOX_SETUP
    for package in ("openssh-server", "sudo", "ca-certificates", "python3"):
        assert package in setup or package in rootfs.BASE_PACKAGES
    assert "NOPASSWD:ALL" in setup
    assert "PermitRootLogin no" in setup
    assert "PasswordAuthentication no" in setup
    assert "rm -f /etc/ssh/ssh_host_*" in setup  # no host keys shared through the image


@pytest.mark.parametrize(("suite", "kind"), [("sid", "base"), ("bookworm", "fat")])
def test_unknown_suites_and_kinds_are_usage_errors(suite: str, kind: str) -> None:
    with pytest.raises(UsageError, match="use one of"):
        rootfs.ensure_base_image(suite, kind)


def test_build_dirs_are_removed(tmp_path: Path) -> None:
    build = tmp_path / "gpurig-rootfs-x"
    (build / "rootfs" / "etc").mkdir(parents=True)
    (build / "rootfs" / "etc" / "hostname").write_text("x")
    rootfs._remove_tree(build)
    assert not build.exists()
