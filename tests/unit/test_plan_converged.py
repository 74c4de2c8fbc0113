"""The one-round-trip probe of what a host already has: run for real with /bin/sh on this
machine (as root, like the roles run it), against files made in a temp dir."""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import subprocess
from pathlib import Path

import pytest

from gpurig.plan import converged
from gpurig.plan.steps import AptPackages, Directories, File, ServiceUser, Step, WheelFile, Wheels
from gpurig.plan.system import apt_script

ME = pwd.getpwuid(os.getuid())
OWNER = ME.pw_name
GROUP = OWNER if OWNER == "root" else str(os.getgid())


def run(steps: list[Step], folders: tuple[str, ...] = ()) -> list[str]:
    """The converged step ids (FOLDERS only when the test names folders)."""
    shell, flag, script = shlex.split(converged.probe_command(steps, folders))
    out = subprocess.run([shell, flag, script], capture_output=True, text=True, check=True)
    found = converged.converged(steps, folders, out.stdout)
    return found if folders else [s for s in found if s != converged.FOLDERS]


def text_file(path: Path, content: str = "a=1\n", mode: str = "0640") -> File:
    return File.text("s.file", "A file", str(path), content, mode=mode, owner=OWNER, group=GROUP)


@pytest.fixture
def placed(tmp_path: Path) -> File:
    path = tmp_path / "environment"
    path.write_text("a=1\n")
    path.chmod(0o640)
    return text_file(path)


def test_a_file_with_its_bytes_owner_and_mode_is_converged(placed: File) -> None:
    assert run([placed]) == ["s.file"]


def test_other_bytes_another_mode_or_a_missing_file_is_not(placed: File, tmp_path: Path) -> None:
    assert run([text_file(Path(placed.path), "a=2\n")]) == []
    assert run([text_file(Path(placed.path), mode="0644")]) == []
    other_owner = File.text(
        "s.file", "A file", placed.path, "a=1\n", mode="0640", owner="nobody", group=GROUP
    )
    assert run([other_owner]) == []
    assert run([text_file(tmp_path / "missing")]) == []


def test_a_symlink_to_the_right_bytes_is_not_converged(placed: File, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(placed.path)
    assert run([text_file(link)]) == []


def test_an_absent_file_is_converged_only_when_nothing_is_there(tmp_path: Path) -> None:
    gone = File.absent("s.proxy", "No proxy", str(tmp_path / "proxy.conf"))
    assert run([gone]) == ["s.proxy"]
    (tmp_path / "proxy.conf").write_text("x")
    assert run([gone]) == []


def test_a_file_copied_from_the_controller_is_compared_by_hash(tmp_path: Path) -> None:
    data = b"\x00binary\xff"
    (tmp_path / "uv").write_bytes(data)
    (tmp_path / "uv").chmod(0o755)
    step = File.copy(
        "p.uv",
        "Install uv",
        str(tmp_path / "uv"),
        src="/controller/uv",
        sha256=hashlib.sha256(data).hexdigest(),
        mode="0755",
        owner=OWNER,
        group=GROUP,
    )
    assert run([step]) == ["p.uv"]


def test_folders_need_owner_and_mode_each(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(mode=0o755)
    (tmp_path / "b").mkdir(mode=0o700)
    (tmp_path / "a").chmod(0o755)
    step = Directories("s.dirs", "Folders", paths=[str(tmp_path / "a")], owner=OWNER, group=GROUP)
    assert run([step]) == ["s.dirs"]
    both = Directories(
        "s.dirs", "Folders", paths=[str(tmp_path / "a"), str(tmp_path / "b")], owner=OWNER
    )
    assert run([both]) == []


def test_the_folders_pseudo_step_needs_every_folder(tmp_path: Path) -> None:
    assert run([], (str(tmp_path),)) == [converged.FOLDERS]
    assert run([], (str(tmp_path), str(tmp_path / "nope"))) == []


def test_apt_packages_installed_or_not() -> None:
    installed = AptPackages("s.apt", "Apt", packages=["dpkg", "coreutils"])
    assert run([installed]) == ["s.apt"]
    assert run([AptPackages("s.apt", "Apt", packages=["dpkg", "no-such-package-xyz"])]) == []
    # A pinned version is apt's to judge: never reported converged, never even probed.
    pinned = AptPackages("s.apt", "Apt", packages=["dpkg=1.0"])
    assert run([pinned]) == []
    assert "dpkg=1.0" not in converged.probe_command([pinned], [])


def test_the_service_user_needs_home_shell_and_a_locked_password() -> None:
    # A system account of this machine whose password is locked, if there is one ("!" in shadow,
    # not "*"): the check is against the role's user task, which sets "!".
    user = ServiceUser("s.user", "User", user=ME.pw_name, home=ME.pw_dir, shell=ME.pw_shell)
    wrong_home = ServiceUser("s.user", "User", user=ME.pw_name, home="/nowhere", shell=ME.pw_shell)
    assert run([wrong_home]) == []
    assert run([ServiceUser("s.user", "User", user="no-such-user-xyz", home="/", shell="/")]) == []
    shadow = subprocess.run(
        ["getent", "shadow", ME.pw_name], capture_output=True, text=True
    ).stdout.split(":")
    assert run([user]) == (["s.user"] if shadow[1:2] == ["!"] else [])


def test_wheels_of_the_right_size_are_present(tmp_path: Path) -> None:
    (tmp_path / "a.whl").write_bytes(b"12345")
    wheel = WheelFile("a.whl", "/controller/a.whl", "0" * 64, size=5)
    assert run([Wheels("l.wheels", "Wheels", str(tmp_path), [wheel])]) == ["l.wheels"]
    short = WheelFile("a.whl", "/controller/a.whl", "0" * 64, size=6)
    assert run([Wheels("l.wheels", "Wheels", str(tmp_path), [short])]) == []


def test_files_and_folders_are_probed_together_each_judged_by_its_own_path(
    tmp_path: Path,
) -> None:
    """One stat and one sha256sum for them all; paths with spaces stay whole."""
    spaced = tmp_path / "a b"
    spaced.mkdir()
    spaced.chmod(0o755)
    good, wrong = spaced / "env file", tmp_path / "profile"
    for path in (good, wrong):
        path.write_text("a=1\n")
        path.chmod(0o640)
    gone = File.absent("s.gone", "No proxy", str(tmp_path / "nothing here"))
    steps: list[Step] = [
        File.text("s.good", "A", str(good), "a=1\n", mode="0640", owner=OWNER, group=GROUP),
        File.text("s.wrong", "B", str(wrong), "a=2\n", mode="0640", owner=OWNER, group=GROUP),
        gone,
        Directories("s.dirs", "Folders", paths=[str(spaced)], owner=OWNER, group=GROUP),
    ]
    assert run(steps) == ["s.good", "s.gone", "s.dirs"]
    script = shlex.split(converged.probe_command(steps, []))[2]
    assert script.count("stat -c 'stat ") == script.count("stat -c 'dir ") == 1
    assert script.count("sha256sum --") == 1


def test_hostile_paths_stay_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = File.text("s.file", "A file", f"{tmp_path}/x; touch {marker}", "a\n")
    assert run([evil]) == []
    assert not marker.exists()


def test_the_apt_script_does_nothing_when_every_package_is_installed() -> None:
    """The Ansible role's apt step (the plan's script), run for real on this machine's dpkg."""
    done = subprocess.run(
        ["/bin/sh", "-c", apt_script(["dpkg", "coreutils"])], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, "gpurig: unchanged")
    # Anything not installed, or pinned, goes to apt: the lists first, then the install (in
    # the background: tests/unit/test_apt_background.py runs that part).
    for packages in (["dpkg", "no-such-package-xyz"], ["dpkg=1.0"]):
        script = apt_script(packages)
        check = script.splitlines()[0].replace("exit 0; fi", "exit 0; fi; echo would-install")
        ran = subprocess.run(["/bin/sh", "-c", check], capture_output=True, text=True)
        assert ran.stdout.strip() == "would-install", packages
        assert " update && " in "\n".join(script.splitlines()[1:])
