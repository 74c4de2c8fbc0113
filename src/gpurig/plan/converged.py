"""Which of a plan's steps a host already has, read in one round trip.

A front end that checks each step on its own pays one round trip per step on a converged host
(Ansible's copy module: a stat and a checksum each). `probe_command(plan)` asks the host about
every step it can check cheaply (files by sha256, owner, group and mode; folders; apt packages;
the service user; wheels by size; models by every file's hash) in one `sh` script run as root,
and `converged(plan, output)` names the steps
whose every check passed. Nothing is skipped that was not checked: a step the probe cannot
judge (a pinned apt version, a script step) is never reported converged.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from gpurig.plan.hashing import SHA256_FUNCTION, sha256_command
from gpurig.plan.models import CHECKED, Models
from gpurig.plan.steps import AptPackages, Directories, File, ServiceUser, Step, Wheels

FOLDERS = "folders"  # the pseudo step: every folder the plan's files go into exists
_MARK = "@@gpurig-step"


def _octal(mode: str) -> int:
    return int(mode, 8)


def _checkable(step: Step) -> bool:
    if isinstance(step, AptPackages):
        # Names only: a pinned version or an architecture is left to apt to judge.
        return bool(step.packages) and not any(set(p) & set("=:") for p in step.packages)
    return isinstance(step, File | Directories | ServiceUser | Wheels | Models)


def _probe(step: Step) -> str:
    """Lines `<what> <value>` about one step; a missing thing prints nothing for it."""
    q = shlex.quote
    if isinstance(step, File):
        path = q(step.path)
        return (
            f"if [ -f {path} ] && [ ! -L {path} ]; then "
            f"echo stat $(stat -c '%U %G %a' {path}); "
            f"echo sha256 $({sha256_command(path)}); "
            f"elif [ -e {path} ] || [ -L {path} ]; then echo other; fi"
        )
    if isinstance(step, Directories):
        return "\n".join(
            f"[ -d {q(p)} ] && [ ! -L {q(p)} ] && echo dir {q(p)} $(stat -c '%U %G %a' {q(p)})"
            for p in step.paths
        )
    if isinstance(step, AptPackages):
        names = " ".join(q(p) for p in step.packages)
        return f"dpkg-query -W -f='pkg ${{Package}} ${{db:Status-Abbrev}}\\n' {names} 2>/dev/null"
    if isinstance(step, ServiceUser):
        # The password field is compared on the host: no hash crosses the wire.
        return (
            f"getent passwd {q(step.user)} | sed 's/^/user /'\n"
            f"[ \"$(getent shadow {q(step.user)} | cut -d: -f2)\" = '!' ] && echo locked"
        )
    if isinstance(step, Wheels):
        return f"find {q(step.directory)} -maxdepth 1 -type f -printf 'wheel %s %f\\n' 2>/dev/null"
    if isinstance(step, Models):  # the plan's own check: it prints nothing on a converged host
        return f"( {step.check} ) 2>/dev/null"
    raise AssertionError(f"no probe for {step.kind}")


def probe_command(steps: Iterable[Step], folders: Iterable[str]) -> str:
    """One `/bin/sh -c` command line (run it as root) probing every checkable step."""
    parts = [SHA256_FUNCTION]
    for step in steps:
        if _checkable(step):
            parts.append(f"echo {_MARK} {shlex.quote(step.id)}\n{_probe(step)}")
    parts.append(f"echo {_MARK} {FOLDERS}")
    parts += [f"[ -d {shlex.quote(f)} ] && echo dir {shlex.quote(f)}" for f in folders]
    return "/bin/sh -c " + shlex.quote("\n".join(parts) + "\ntrue")


def _sections(output: str) -> dict[str, list[list[str]]]:
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == _MARK:
            current = sections.setdefault(words[1], [])
        elif words and current is not None:
            current.append(words)
    return sections


def _file_converged(step: File, lines: list[list[str]]) -> bool:
    if not step.present:
        return not lines
    stat = next((w[1:] for w in lines if w[0] == "stat"), None)
    digest = next((w[1] for w in lines if w[0] == "sha256" and len(w) == 2), None)
    return (
        stat is not None
        and len(stat) == 3
        and stat[:2] == [step.owner, step.group]
        and int(stat[2], 8) == _octal(step.mode)
        and digest == step.sha256
    )


def _step_converged(step: Step, lines: list[list[str]]) -> bool:
    if isinstance(step, File):
        return _file_converged(step, lines)
    if isinstance(step, Directories):
        want = [step.owner, step.group, _octal(step.mode)]
        dirs = {w[1]: [w[2], w[3], int(w[4], 8)] for w in lines if w[0] == "dir" and len(w) == 5}
        return all(dirs.get(p) == want for p in step.paths)
    if isinstance(step, AptPackages):
        installed = {w[1] for w in lines if w[0] == "pkg" and len(w) == 3 and w[2] == "ii"}
        return set(step.packages) <= installed
    if isinstance(step, ServiceUser):
        # As the role's user task leaves it: this home and shell, and no password ("!").
        entry = next((" ".join(w[1:]).split(":") for w in lines if w[0] == "user"), None)
        locked = ["locked"] in lines
        return locked and entry is not None and entry[5:] == [step.home, step.shell]
    if isinstance(step, Wheels):
        sized = {(w[1], w[2]) for w in lines if w[0] == "wheel" and len(w) == 3}
        return all((str(wheel.size), wheel.name) in sized for wheel in step.wheels)
    if isinstance(step, Models):  # the check ran to its end and found nothing missing
        return lines == [[CHECKED]]
    return False


def converged(steps: Iterable[Step], folders: Iterable[str], output: str) -> list[str]:
    """The ids of the steps the probe's `output` shows in place (and FOLDERS when every folder
    exists), in plan order."""
    sections = _sections(output)
    done = [
        step.id
        for step in steps
        if _checkable(step) and step.id in sections and _step_converged(step, sections[step.id])
    ]
    existing = {w[1] for w in sections.get(FOLDERS, []) if w[0] == "dir" and len(w) == 2}
    if FOLDERS in sections and set(folders) <= existing:
        done.append(FOLDERS)
    return done


def sizes(step: Wheels, output: str) -> dict[str, int]:
    """The sizes of the files the probe found in the wheels step's folder."""
    lines = _sections(output).get(step.id, [])
    return {w[2]: int(w[1]) for w in lines if w[0] == "wheel" and len(w) == 3 and w[1].isdigit()}
