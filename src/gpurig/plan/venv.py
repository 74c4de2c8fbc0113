"""The LLM environment's plan: the wheels to push, the requirements, and the venv's build script.

Layout (docs/host-end-state.md): venvs live in <venvs_dir>/<venv_id>; the live path is a
symlink to one of them. A build goes into a hidden folder beside them; its marker
(gpurig-venv.json) is written last, after the install and an import check passed, and only
then is the build renamed to its venv_id, so a venv without the marker is never live unless
someone broke it, and is rebuilt. The live link moves only to a complete venv, with a
temporary link and `mv -T` (rename(2)): a failed or interrupted install never touches the venv
in use, even when the venv to rebuild is the live one (its marker missing or different). The
previous venv stays for rollback; older ones are removed.

The script decides everything on the host, under a lock, so every front end runs the same
text: on a converged host it changes nothing and prints nothing; each change prints a
`gpurig: changed: ...` line; with GPURIG_DRY_RUN=1 it prints those lines and changes nothing.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from gpurig import compat
from gpurig.bloomkit_wheel import Wheel
from gpurig.hostlayout import ENV_FILE, MARKER, REQUIREMENTS_DIR, UV_BIN, WHEEL_DIR, Layout, venv_id
from gpurig.lock import Target
from gpurig.plan.python import SYSTEM_PYTHON, uv_settings
from gpurig.plan.steps import CHANGED, File, Step, Venv, WheelFile, Wheels
from gpurig.spec import Stack

# A second install of the same host (an earlier run cut off mid-way, still running on the
# host) holds this lock; wait for it rather than build over it.
LOCK_WAIT_S = 1800
COMPILE_TIMEOUT_S = 300  # the bytecode beside the import check: a hang must not hold the build


def marker_json(data: dict[str, Any]) -> str:
    """The one text form of a venv marker: front ends compare it byte for byte."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def venv_marker(target: Target, wheel: Wheel, python: str) -> str:
    """gpurig-venv.json: what a complete venv was built from (docs/host-end-state.md)."""
    return marker_json(
        {
            "venv_id": venv_id(target, wheel.sha256),
            "target": target.name,
            "lock_sha256": target.sha256,
            "bloomkit_sha256": wheel.sha256,
            "python": python,
            "torch": target.torch,
        }
    )


def import_check(target: Target) -> str:
    """Run by the new venv before it is marked complete: the locked torch, of the right build."""
    cuda = compat.cuda_version(target.variant)
    return "; ".join(
        [
            "import importlib.metadata as m, torch, transformers, bloomkit",
            f"v = m.version('torch'); assert v == {target.torch!r}, 'torch ' + v",
            f"assert torch.version.cuda == {cuda!r}, 'torch CUDA ' + str(torch.version.cuda)",
        ]
    )


def compile_beside_check(python: str) -> str:
    """Root's `python -m bloomkit.warm` in the background, beside the import check: the
    bytecode of what the smoke imports beyond the check, on the core it leaves idle, written
    before the venv goes live (the service user cannot write it into root's venv, and would
    otherwise compile those modules in memory on every smoke). Niced below the check, bounded,
    isolated (-I: no cwd or user site on its path, no PYTHON* variables), in a clean
    environment; a failure only leaves the smoke more to compile. Sets WARM to the PID of
    timeout(1), which passes a kill on to Python."""
    return (
        f"( cd / && exec env -i PATH=/usr/bin:/bin nice -n 10 timeout -k 5 {COMPILE_TIMEOUT_S} "
        f"{python} -I -m bloomkit.warm ) >/dev/null 2>&1 & WARM=$!"
    )


def build_script(
    *,
    link: str,
    venvs_dir: str,
    venv_dir: str,
    requirements_path: str,
    python: str,
    marker: str,
    check: str,
    source_args: list[str],
    env: dict[str, str],
    env_file: str | None = ENV_FILE,
    uv: str = UV_BIN,
) -> str:
    """The venv's build and swap, as one POSIX sh script run as root."""
    q = shlex.quote
    settings = " ".join(f"{k}={q(v)}" for k, v in sorted(env.items()))
    uv_cmd = f"{settings} {q(uv)}" if settings else q(uv)
    lines = [
        "set -eu",
        "umask 022",
        f"D={q(venv_dir)}",
        f"LINK={q(link)}",
        f"VENVS={q(venvs_dir)}",
        f'M="$D/{MARKER}"',
        'B="$VENVS/.gpurig-build"',  # hidden: neither a venv to keep nor one to roll back to
        f'change() {{ echo "{CHANGED}$*"; [ -z "${{GPURIG_DRY_RUN:-}}" ]; }}',
        'if [ -z "${GPURIG_DRY_RUN:-}" ]; then',
        '  mkdir -p "$VENVS"',
        '  exec 9>"$VENVS/.gpurig.lock"',
        f'  flock -w {LOCK_WAIT_S} 9 || {{ echo "another install holds $VENVS/.gpurig.lock" >&2; '
        "exit 1; }",
        "fi",
        # Written by the system stage; a dry run on a fresh host has none yet.
        *(
            [f"if [ -r {q(env_file)} ]; then set -a; . {q(env_file)}; set +a; fi"]
            if env_file
            else []
        ),
        # The venv kept for rollback: the live one before a swap, else the newest other.
        'CUR=$(readlink "$LINK" 2>/dev/null || true)',
        'KEEP=""',
        'if [ -n "$CUR" ] && [ "$CUR" != "$D" ]; then KEEP=$CUR; else',
        '  KEEP=$(ls -1dt "$VENVS"/*/ 2>/dev/null | sed "s,/$,," | grep -vxF "$D" | head -n 1 '
        "|| true)",
        "fi",
        # A run cut off between the two renames below: put the previous copy of $D back.
        'if [ ! -e "$D" ] && [ -d "$B.old" ] && change "put $D back"; then mv -T "$B.old" "$D"; fi',
        # Re-checked under the lock: a cut-off earlier run may have finished meanwhile.
        f'if [ "$(cat "$M" 2>/dev/null)" != {q(marker)} ] && change "build $D"; then',
        # Built beside $D, never in it: $D may be the live venv (its marker missing or
        # different), and it stays in use until the new one is complete. Relocatable, so
        # that the finished build can be renamed to $D.
        '  rm -rf "$B" "$B.old"',
        f'  {uv_cmd} venv --quiet --relocatable --python {q(python)} "$B"',
        f'  {uv_cmd} pip sync --python "$B/bin/python" --require-hashes '
        f"{' '.join(q(a) for a in source_args)} {q(requirements_path)}",
        # Read-only to the service user (uv leaves a 0666 .lock): beside the import check, on
        # the core it leaves idle (what the check writes gets umask 022's modes anyway).
        '  chmod -R go-w "$B" & CHMOD=$!',
        "  " + compile_beside_check('"$B/bin/python"'),
        f'  "$B/bin/python" -c {q(check)} || {{ rc=$?; '
        'kill "$WARM" "$CHMOD" 2>/dev/null || true; exit "$rc"; }',
        '  wait "$CHMOD"',
        '  wait "$WARM" || true',  # only speed rides on it
        f'  cp {q(requirements_path)} "$B/gpurig-requirements.txt"',
        f"  printf '%s\\n' {q(marker)} > \"$B/{MARKER}\"",  # last: only a complete venv
        # Complete: the old $D is moved aside (two renames: the live path is missing only
        # between them), then removed.
        '  if [ -e "$D" ]; then mv -T "$D" "$B.old"; fi',
        '  mv -T "$B" "$D"',
        '  rm -rf "$B.old"',
        "fi",
        # A directory (not gpurig's link) at the live path: keep it as the rollback venv.
        'if [ -e "$LINK" ] && [ ! -L "$LINK" ] && change "move the directory $LINK aside"; then',
        '  KEEP="$VENVS/replaced-$(date +%s)"',
        '  mv -T "$LINK" "$KEEP"',
        "fi",
        'if [ "$CUR" != "$D" ] && change "point $LINK at $D"; then',
        '  ln -sfn "$D" "$LINK.gpurig-new"',
        '  mv -T "$LINK.gpurig-new" "$LINK"',
        "fi",
        'for d in "$VENVS"/*/; do',
        '  [ -d "$d" ] || continue',
        "  d=${d%/}",
        '  [ "$d" = "$D" ] || [ "$d" = "$KEEP" ] || { change "remove $d" && rm -rf "$d"; } || true',
        "done",
    ]
    return "\n".join(lines) + "\n"


def steps(
    stack: Stack,
    target: Target,
    wheel: Wheel,
    python: str,
    uv_python: bool,
    requirements: str,
    wheels: list[WheelFile],
) -> list[Step]:
    """requirements: the lock's text for the target; wheels: everything to push, bloomkit's too."""
    layout = Layout(stack)
    identity = venv_id(target, wheel.sha256)
    requirements_path = f"{REQUIREMENTS_DIR}/{identity}.txt"
    if stack.install.offline:
        source_args = ["--offline", "--no-index", "--find-links", WHEEL_DIR]
    else:
        source_args = target.uv_source_args(find_links=[WHEEL_DIR])
    venv_dir = layout.venv_dir(target, wheel.sha256)
    marker = venv_marker(target, wheel, python)
    script = build_script(
        link=layout.venv_link,
        venvs_dir=layout.venvs_dir,
        venv_dir=venv_dir,
        requirements_path=requirements_path,
        python=python if uv_python else SYSTEM_PYTHON,
        marker=marker,
        check=import_check(target),
        source_args=source_args,
        env=uv_settings(managed=uv_python),
    )
    return [
        Wheels(
            "llm_env.wheels",
            "Push wheels the hosts cannot download",
            directory=WHEEL_DIR,
            wheels=sorted(wheels, key=lambda w: w.name),
        ),
        File.text(
            "llm_env.requirements",
            "Keep what the venv is built from",
            requirements_path,
            requirements.rstrip("\n") + "\n" + wheel.requirement + "\n",
        ),
        Venv(
            "llm_env.venv",
            f"Install the locked venv ({target.name})",
            link=layout.venv_link,
            venvs_dir=layout.venvs_dir,
            venv_dir=venv_dir,
            marker_file=MARKER,
            marker=marker,
            requirements_path=requirements_path,
            script=script,
        ),
    ]
