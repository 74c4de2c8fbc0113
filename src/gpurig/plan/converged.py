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
# Sections of every file's and every folder's lines: one `stat` and one `sha256sum` for all of
# them, where a process or three each were most of a converged host's probe.
_FILES, _DIRS = "@files", "@dirs"


def _octal(mode: str) -> int:
    return int(mode, 8)


def _checkable(step: Step) -> bool:
    if isinstance(step, AptPackages):
        # Names only: a pinned version or an architecture is left to apt to judge.
        return bool(step.packages) and not any(set(p) & set("=:") for p in step.packages)
    return isinstance(step, File | Directories | ServiceUser | Wheels | Models)


def _words(paths: Iterable[str]) -> str:
    return " ".join(shlex.quote(p) for p in dict.fromkeys(paths))


def _files_probe(files: list[File]) -> str:
    """`stat U G MODE PATH` for each regular file (not a link) at a file step's path, and
    `other PATH` for anything else there; then `HEX  PATH` (sha256sum's form) for each regular
    one the plan writes: the plan's own text in one sha256sum, controller copies (uv's
    binary) through gpurig_sha256 and its memo."""
    texts = _words(f.path for f in files if f.present and f.src is None)
    copies = _words(f.path for f in files if f.present and f.src is not None)
    regular = '[ -f "$p" ] && [ ! -L "$p" ]'
    lines = [
        "set --",
        f"for p in {_words(f.path for f in files)}; do",
        f'  if {regular}; then set -- "$@" "$p"',
        '  elif [ -e "$p" ] || [ -L "$p" ]; then echo "other $p"; fi',
        "done",
        "[ $# -eq 0 ] || stat -c 'stat %U %G %a %n' -- \"$@\"",
    ]
    if texts:
        lines += [
            "set --",
            f'for p in {texts}; do {regular} && set -- "$@" "$p"; done',
            '[ $# -eq 0 ] || sha256sum -- "$@"',
        ]
    if copies:
        digest = sha256_command('"$p"')
        lines.append(
            f'for p in {copies}; do if {regular}; then d=$({digest}) && echo "$d  $p"; fi; done'
        )
    return "\n".join(lines)


def _dirs_probe(paths: Iterable[str]) -> str:
    """`dir U G MODE PATH` for each folder (not a link) among `paths`, in one stat."""
    return "\n".join(
        [
            "set --",
            f'for p in {_words(paths)}; do [ -d "$p" ] && [ ! -L "$p" ] && set -- "$@" "$p"; done',
            "[ $# -eq 0 ] || stat -c 'dir %U %G %a %n' -- \"$@\"",
        ]
    )


def _probe(step: Step) -> str:
    """Lines `<what> <value>` about one step; a missing thing prints nothing for it. (Files
    and folders are probed together: `_files_probe`, `_dirs_probe`.)"""
    q = shlex.quote
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
    steps = list(steps)
    parts = [SHA256_FUNCTION]
    files = [s for s in steps if isinstance(s, File)]
    if files:
        parts.append(f"echo {_MARK} {_FILES}\n{_files_probe(files)}")
    dirs = [p for s in steps if isinstance(s, Directories) for p in s.paths]
    if dirs:
        parts.append(f"echo {_MARK} {_DIRS}\n{_dirs_probe(dirs)}")
    for step in steps:
        if _checkable(step) and not isinstance(step, File | Directories):
            parts.append(f"echo {_MARK} {shlex.quote(step.id)}\n{_probe(step)}")
    parts.append(f"echo {_MARK} {FOLDERS}")
    parts += [f"[ -d {shlex.quote(f)} ] && echo dir {shlex.quote(f)}" for f in folders]
    return "/bin/sh -c " + shlex.quote("\n".join(parts) + "\ntrue")


def _raw_sections(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == _MARK:
            current = sections.setdefault(words[1], [])
        elif words and current is not None:
            current.append(line)
    return sections


def _words_of(raw: dict[str, list[str]]) -> dict[str, list[list[str]]]:
    return {k: [line.split() for line in v] for k, v in raw.items()}


def _sections(output: str) -> dict[str, list[list[str]]]:
    return _words_of(_raw_sections(output))


_HEX = frozenset("0123456789abcdef")


def _by_path(lines: list[str]) -> dict[str, list[list[str]]]:
    """The files' or folders' lines by path: `[what, *values]` (a path may hold spaces: it
    comes last, or after sha256sum's two spaces)."""
    found: dict[str, list[list[str]]] = {}
    for line in lines:
        if len(line) > 66 and line[64:66] == "  " and set(line[:64]) <= _HEX:
            found.setdefault(line[66:], []).append(["sha256", line[:64]])
            continue
        what, _, rest = line.partition(" ")
        if what == "other":
            found.setdefault(rest, []).append([what])
        elif what in ("stat", "dir"):
            words = rest.split(" ", 3)
            if len(words) == 4:
                found.setdefault(words[3], []).append([what, *words[:3]])
    return found


def _file_converged(step: File, lines: list[list[str]]) -> bool:
    if not step.present:
        return not lines
    stat = next((w[1:] for w in lines if w[0] == "stat"), None)
    digest = next((w[1] for w in lines if w[0] == "sha256"), None)
    return (
        stat is not None
        and stat[:2] == [step.owner, step.group]
        and int(stat[2], 8) == _octal(step.mode)
        and digest == step.sha256
    )


def _dirs_converged(step: Directories, dirs: dict[str, list[list[str]]]) -> bool:
    want = ["dir", step.owner, step.group, _octal(step.mode)]
    return all(
        any([*w[:3], int(w[3], 8)] == want for w in dirs.get(p, []) if w[0] == "dir")
        for p in step.paths
    )


def _step_converged(step: Step, lines: list[list[str]]) -> bool:
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
    raw = _raw_sections(output)
    sections = _words_of(raw)
    files, dirs = _by_path(raw.get(_FILES, [])), _by_path(raw.get(_DIRS, []))
    done = []
    for step in steps:
        if isinstance(step, File):
            ok = _FILES in raw and _file_converged(step, files.get(step.path, []))
        elif isinstance(step, Directories):
            ok = _DIRS in raw and _dirs_converged(step, dirs)
        else:
            ok = (
                _checkable(step)
                and step.id in sections
                and _step_converged(step, sections[step.id])
            )
        if ok:
            done.append(step.id)
    existing = {w[1] for w in sections.get(FOLDERS, []) if w[0] == "dir" and len(w) == 2}
    if FOLDERS in sections and set(folders) <= existing:
        done.append(FOLDERS)
    return done


def sizes(step: Wheels, output: str) -> dict[str, int]:
    """The sizes of the files the probe found in the wheels step's folder."""
    lines = _sections(output).get(step.id, [])
    return {w[2]: int(w[1]) for w in lines if w[0] == "wheel" and len(w) == 3 and w[1].isdigit()}
