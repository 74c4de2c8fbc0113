"""Every gpurig `apt-get update` (gpurig.plan.system.apt_update): gzip lists first; a host
without translated descriptions is not sent for them, a host that has them keeps them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpurig.plan import system


def updated_with(tmp_path: Path, lists: list[str]) -> list[str]:
    """The arguments apt-get got, run by the real fragment with a stand-in apt-get."""
    folder = tmp_path / "lists"
    folder.mkdir()
    for name in lists:
        (folder / name).touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["/bin/sh", "-c", system.apt_update(120, lists=str(folder))],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


MAIN = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
TRANSLATION = "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en"


@pytest.mark.parametrize("lists", [[], [MAIN]], ids=["fresh", "lists-without-translations"])
def test_a_host_without_translations_is_not_sent_for_them(tmp_path: Path, lists: list[str]) -> None:
    args = updated_with(tmp_path, lists)
    assert args[-3:] == ["-o", "Acquire::Languages=none", "update"]


def test_gzip_lists_come_first(tmp_path: Path) -> None:
    args = updated_with(tmp_path, [])
    assert args[args.index("Acquire::CompressionTypes::Order::=gz") - 1] == "-o"


def test_a_host_with_translations_keeps_them(tmp_path: Path) -> None:
    args = updated_with(tmp_path, [MAIN, TRANSLATION])
    assert "Acquire::Languages=none" not in args
    assert args[-1] == "update"
    assert "DPkg::Lock::Timeout=120" in args  # the bounded lock wait stays
