"""The command lines `gpurig cluster` runs on the members, and reading what they print: the
launch (as root, then the service user's login shell, bounded by timeout(1), its pid first),
ending exactly the process tree a launch started, and the reports fetched back."""

from __future__ import annotations

import getpass
import shlex
from collections.abc import Sequence

KILL_WAIT_S = 10.0  # after SIGTERM, before SIGKILL
PID_LINE = "gpurig-launch-pid="
FILE_MARK = "@@gpurig-file "

# Ends exactly the processes a launch started: the tree under its pid (torchrun puts each
# worker in a session of its own, so a process-group signal would miss them).
KILL_TREE = r"""
import os, sys
root, sig = int(sys.argv[1]), int(sys.argv[2])
children = {}
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
todo, tree = [root], []
while todo:
    pid = todo.pop()
    tree.append(pid)
    todo += children.get(pid, [])
for pid in tree:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
"""


def _sudo(user: str | None) -> str:
    """Root needs no sudo; every other SSH user has password-less sudo (preflight checks it)."""
    return "" if (user or getpass.getuser()) == "root" else "sudo -n "


def launch_command(
    bloomkit_args: Sequence[str], user: str, reports: str | None, deadline_s: int, sudo: str
) -> str:
    """As root: a fresh reports folder for the service user, then the launcher as that user
    (a login shell: its PATH and limits), bounded by timeout(1); the pid first, to end it."""
    launch = shlex.join(["gpurig-launch", *bloomkit_args])
    steps = []
    if reports:
        folder = shlex.quote(reports)
        steps.append(f"rm -rf {folder} && install -d -o {shlex.quote(user)} -m 755 {folder}")
    steps.append(f"echo {PID_LINE}$$")
    steps.append(
        f"exec timeout -k {int(KILL_WAIT_S)} {int(deadline_s)} runuser -l {shlex.quote(user)} "
        f"-c {shlex.quote(launch)}"
    )
    return f"{sudo}sh -c {shlex.quote(' && '.join(steps))} 2>&1"


def collect_command(reports: str, user: str, sudo: str) -> str:
    """The run's JSON reports, each after a FILE_MARK line. Read as the service user, who owns
    the folder and could leave a link there to a file only root may read; links are skipped."""
    script = (
        f"cd {shlex.quote(reports)} 2>/dev/null || exit 0; for f in *.json; do "
        f'[ -f "$f" ] && [ ! -L "$f" ] || continue; echo "{FILE_MARK}$f"; cat -- "$f"; echo; done'
    )
    return f"{sudo}runuser -u {shlex.quote(user)} -- sh -c {shlex.quote(script)}"


def _pid(output: str) -> int | None:
    for line in output.splitlines()[:5]:
        if line.startswith(PID_LINE) and line[len(PID_LINE) :].strip().isdigit():
            return int(line[len(PID_LINE) :])
    return None


def split_files(text: str) -> dict[str, str]:
    files: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith(FILE_MARK):
            current = line[len(FILE_MARK) :].strip()
            files[current] = ""
        elif current is not None:
            files[current] += line
    return files
