"""The locked venv: built beside the live one, swapped in by one atomic rename.

Layout (docs/host-end-state.md): venvs live in <venvs_dir>/<venv_id>; the live path is a
symlink to one of them. A build goes into its own folder; its marker (gpurig-venv.json) is
written last, after the install and an import check passed, so a folder without the marker is
an interrupted build and is rebuilt. The live link moves only to a complete venv, with a
temporary link and `mv -T` (rename(2)): a failed or interrupted install never touches the venv
in use. The previous venv stays for rollback; older ones are removed.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from pyinfra.api.command import FileUploadCommand
from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.facts.system import Venvs, VenvState
from gpurig.hostlayout import MARKER, UV_BIN

# A second install of the same host (an earlier run cut off mid-way, still running on the
# host) holds this lock; wait for it rather than build over it.
LOCK_WAIT_S = 1800


@dataclass(frozen=True)
class VenvPlan:
    link: str  # the live path, e.g. /opt/gpurig/venv
    venvs_dir: str  # /opt/gpurig/venvs
    venv_dir: str  # /opt/gpurig/venvs/<venv_id>
    requirements: str  # the lock's requirements plus the bloomkit line
    requirements_path: str  # where the requirements go on the host
    python: str  # an interpreter path, or a version uv finds among its managed Pythons
    marker: str  # marker text (facts.system.marker_json)
    check: str  # Python code run by the new venv before it is marked complete
    source_args: list[str] = field(default_factory=list)  # uv index / find-links flags
    env: Mapping[str, str] = field(default_factory=dict)  # more for uv, e.g. its Python dir
    # KEY=value lines exported first (certificates, proxy): a proxy's credentials stay out of
    # command lines, which `ps` shows and pyinfra -v prints.
    env_file: str | None = None
    uv: str = UV_BIN


def _keep(venvs: Venvs, plan: VenvPlan) -> str | None:
    """The venv kept for rollback: the live one before a swap, else the newest other."""
    if venvs.live and venvs.live != plan.venv_dir:
        return venvs.live
    others = [d for d in venvs.mtimes if d != plan.venv_dir]
    return max(others, key=lambda d: (venvs.mtimes[d], d)) if others else None


def build_script(plan: VenvPlan, keep: str | None, build: bool) -> str:
    q = shlex.quote
    env = " ".join(f"{k}={q(v)}" for k, v in sorted(plan.env.items()))
    uv = f"{env} {q(plan.uv)}" if env else q(plan.uv)
    lines = [
        "set -eu",
        "umask 022",
        f"D={q(plan.venv_dir)}",
        f"LINK={q(plan.link)}",
        f"VENVS={q(plan.venvs_dir)}",
        f"KEEP={q(keep or '')}",
        'mkdir -p "$VENVS"',
        'exec 9>"$VENVS/.gpurig.lock"',
        *([f"set -a; . {q(plan.env_file)}; set +a"] if plan.env_file else []),
        f'flock -w {LOCK_WAIT_S} 9 || {{ echo "another install holds $VENVS/.gpurig.lock" >&2; '
        "exit 1; }",
    ]
    if build:
        lines += [
            f'M="$D/{MARKER}"',
            # Re-checked under the lock: a cut-off earlier run may have finished meanwhile.
            f'if [ "$(cat "$M" 2>/dev/null)" != {q(plan.marker)} ]; then',
            '  rm -rf "$D"',
            f'  {uv} venv --quiet --python {q(plan.python)} "$D"',
            f'  {uv} pip sync --python "$D/bin/python" --require-hashes '
            f"{' '.join(q(a) for a in plan.source_args)} {q(plan.requirements_path)}",
            f'  "$D/bin/python" -c {q(plan.check)}',
            f'  cp {q(plan.requirements_path)} "$D/gpurig-requirements.txt"',
            '  chmod -R go-w "$D"',  # read-only to the service user (uv leaves a 0666 .lock)
            f"  printf '%s\\n' {q(plan.marker)} > \"$M.tmp\"",
            '  mv "$M.tmp" "$M"',  # last: only a complete venv has a marker
            "fi",
        ]
    lines += [
        # A directory (not gpurig's link) at the live path: keep it as the rollback venv.
        'if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then',
        '  KEEP="$VENVS/replaced-$(date +%s)"',
        '  mv -T "$LINK" "$KEEP"',
        "fi",
        'if [ "$(readlink "$LINK" 2>/dev/null)" != "$D" ]; then',
        '  ln -sfn "$D" "$LINK.gpurig-new"',
        '  mv -T "$LINK.gpurig-new" "$LINK"',
        "fi",
        'for d in "$VENVS"/*/; do',
        "  d=${d%/}",
        '  [ "$d" = "$D" ] || [ "$d" = "$KEEP" ] || rm -rf "$d"',
        "done",
    ]
    return "\n".join(lines) + "\n"


@operation()
def locked_venv(plan: VenvPlan) -> Generator[Any, None, None]:
    venvs = host.get_fact(VenvState, link=plan.link, venvs_dir=plan.venvs_dir, marker=MARKER)
    complete = venvs.markers.get(plan.venv_dir) == plan.marker
    keep = _keep(venvs, plan)
    leftovers = [d for d in venvs.mtimes if d not in (plan.venv_dir, keep)]
    if complete and venvs.live == plan.venv_dir and not venvs.live_is_dir and not leftovers:
        host.noop(f"{plan.link} -> {plan.venv_dir} is complete")
        return
    if not complete:
        yield FileUploadCommand(
            StringIO(plan.requirements),
            plan.requirements_path,
            remote_temp_filename=host.get_temp_filename(plan.requirements_path),
        )
    yield build_script(plan, keep, build=not complete)
