"""What the Ansible plugins do on the controller, as typed and tested Python.

The preflight action plugin runs `probe_command()` on a host (the pyinfra deploy's own fact
probes), then hands its output and the host's role variables to `plan()`, which calls the same
gpurig code as the pyinfra deploy: spec loading and compatibility checks, the lock,
`preflight.evaluate`, the GPU layer's driver plan, the bloomkit wheel build, `hostlayout`, and
the deploy's own file contents (environment, login profile), venv marker and smoke command. The
roles only act on the returned plan, so both front ends write the same bytes to a host.
"""

from __future__ import annotations

import fcntl
import io
import json
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import DeployError
from pyinfra.facts.apt import AptSources
from rich.console import Console

from gpurig import ansible_render, bloomkit_wheel, compat, hostlayout, lock, preflight, report, spec
from gpurig.deploys import llm_env, nvidia, python, system
from gpurig.errors import GpurigError, UsageError
from gpurig.facts import gpu as gpu_facts
from gpurig.facts.gpu import GpuHost
from gpurig.facts.system import HostProbe, marker_json, to_host_facts
from gpurig.model.host import GpuState, HostFacts
from gpurig.operations import smoke
from gpurig.spec import Stack

VENV_PYTHON = "bin/python"
SYSTEM_PYTHON = "/usr/bin/python3"
NO_REPORT = "no report"  # the smoke role's verdict when bloomkit wrote none
# The OS dispatch of the roles (vars/<distribution>.yml, setup-<os_family>.yml), from the probe:
# no second fact-gathering round trip.
OS_NAMES = {"debian": ("Debian", "Debian"), "ubuntu": ("Ubuntu", "Debian")}
# Split the output of the probes sent in one round trip.
GPU_SECTION = "@@gpurig-gpu-fact"
SOURCES_SECTION = "@@gpurig-apt-sources"


def probe_command(venv: str) -> str:
    """The pyinfra deploy's fact probes (system, the GPU layer's, apt sources) in one `sh -c`
    command line. Run it as the SSH user, without become: it tests passwordless sudo itself."""
    system = HostProbe().command(venv).strip()
    gpus = GpuHost().command().strip()
    sources = AptSources().command().strip()
    script = (
        f"(\n{system}\n)\necho {GPU_SECTION}\n(\n{gpus}\n)\n"
        f"echo {SOURCES_SECTION}\n{sources} 2>/dev/null\ntrue"
    )
    return "/bin/sh -c " + shlex.quote(script)


@dataclass(frozen=True)
class Probed:
    facts: HostFacts
    gpu: GpuState
    sources: list[Any]  # pyinfra AptRepo entries


def parse_probe(stdout: str) -> Probed:
    """The probes' output as preflight.HostFacts, parsed by the pyinfra deploy's own code."""
    lines = stdout.splitlines()
    gpu_at = lines.index(GPU_SECTION) if GPU_SECTION in lines else len(lines)
    sources_at = lines.index(SOURCES_SECTION) if SOURCES_SECTION in lines else len(lines)
    probe = HostProbe().process(lines[:gpu_at])
    if not probe.get("arch") or not probe.get("mem_kb"):
        raise GpurigError(f"the fact probe printed no facts: {stdout[-300:]!r}")
    state = GpuHost().process(lines[gpu_at + 1 : sources_at])
    sources = AptSources().process(lines[sources_at + 1 :]) if sources_at < len(lines) else []  # type: ignore[no-untyped-call]
    return Probed(gpu_facts.apply(to_host_facts(probe), state), state, list(sources))


def load_stack(
    stack_file: Path, lock_dir: Path, render_sha256: str | None
) -> tuple[Stack, lock.Lock]:
    """The spec and its lock, refused when stale or when the rendered role defaults are."""
    stack = spec.load(stack_file)
    problems = compat.problems(stack)
    if problems:
        raise spec.SpecErrors(str(stack_file), problems)
    locked = lock.load(lock_dir)
    locked.assert_fresh(stack)
    if render_sha256 is not None and render_sha256 != ansible_render.render_sha256(stack, locked):
        raise UsageError(
            f"the roles' generated defaults are stale for {stack_file} and {lock_dir}: "
            "run `gpurig render`"
        )
    return stack, locked


def _build_wheel() -> bloomkit_wheel.Wheel:
    """One build per source change, even with many forks asking at once. The plan names a
    copy kept by content: dist/<name> is overwritten when the sources change mid-run."""
    bloomkit_wheel.DIST.mkdir(parents=True, exist_ok=True)
    with (bloomkit_wheel.DIST / ".build.lock").open("a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        wheel = bloomkit_wheel.build()
        kept = bloomkit_wheel.DIST / "by-sha256" / wheel.sha256 / wheel.path.name
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(wheel.path, kept)
    return bloomkit_wheel.Wheel(kept, wheel.sha256)


def front_end_problems(base: Stack, stack: Stack) -> list[str]:
    """What the playbook adds to `evaluate`, as the pyinfra deploy's deploy_problems does."""
    problems = []
    if stack.digest() != base.digest():
        problems.append(
            "inventory variables change what lock/ was resolved from (python, torch, packages "
            "or sources): set them in stack.yml and run `gpurig resolve` and `gpurig render`"
        )
    if stack.install.offline:
        problems.append(
            "install.offline is not supported by the Ansible roles yet: deploy air-gapped hosts "
            "with `gpurig deploy` (pyinfra)"
        )
    return problems


def smoke_args(stack: Stack, has_gpu: bool) -> list[str]:
    """`bloomkit smoke` options after --json, as the pyinfra verify stage passes them."""
    args = ["--model", stack.smoke.model]
    if has_gpu or stack.nvidia.require_gpu:
        args.append("--require-gpu")
    if stack.smoke.quick:
        args.append("--quick")
    return args


def nonfree_list(sources: list[Any], codename: str) -> str | None:
    """The non-free apt list the GPU layer writes (gpurig.deploys.nvidia.debian_nonfree):
    contrib, non-free and non-free-firmware for each suite the host already uses; None when the
    sources have them already."""
    entries = []
    for repo in sources:
        url, suite, components = repo["url"], repo["distribution"], set(repo["components"])
        if repo["type"] != "deb" or not suite.startswith(codename):
            continue
        if {"contrib", "non-free"} <= components:
            return None
        signed = repo["options"].get("signed-by")
        option = f" [signed-by={signed}]" if isinstance(signed, str) else ""
        entries.append(f"deb{option} {url} {suite} contrib non-free non-free-firmware")
    if not entries:
        raise DeployError(f"no Debian {codename} apt source to add non-free to: add one")
    content = "# Written by gpurig: Debian's NVIDIA driver lives in non-free.\n"
    return content + "\n".join(dict.fromkeys(entries)) + "\n"


def _driver(stack: Stack, probed: Probed) -> dict[str, Any]:
    """The GPU layer's decisions for this host (gpurig.deploys.nvidia.plan_driver)."""
    facts, state = probed.facts, probed.gpu
    plan = nvidia.plan_driver(facts.os_id, facts.os_version, state, stack.nvidia)
    codename = nvidia.DEBIAN_CODENAME.get(facts.os_version)
    nonfree = None
    if plan.source == "debian" and codename:
        nonfree = nonfree_list(probed.sources, codename)
    return {
        "describe": plan.describe(),
        "source": plan.source,
        "packages": plan.packages,
        "headers": plan.headers,
        "precompiled": plan.precompiled,
        "kernel_holds": plan.kernel_holds,
        "missing": [p for p in plan.packages if p not in state.packages],
        "nonfree": nonfree,
        "kernel": state.kernel,
        "held": sorted(state.held),
        "can_reboot": state.can_reboot,
        "cuda_keyring_url": plan.cuda_repo + nvidia.CUDA_KEYRING,
        "cuda_key_fingerprint": nvidia.CUDA_KEY_FINGERPRINT,
        "nouveau_conf": gpu_facts.NOUVEAU_CONF,
        "nouveau_blacklist": nvidia.NOUVEAU_BLACKLIST,
        "unattended_conf": gpu_facts.UNATTENDED_CONF,
        "unattended_upgrades": nvidia.unattended_upgrades_file(kernel=stack.nvidia.hold_packages),
        "persistenced_dropin_path": gpu_facts.PERSISTENCED_DROPIN,
        "persistenced_dropin": nvidia.persistenced_dropin(plan.persistenced_user),
        "nonfree_list": gpu_facts.NONFREE_LIST,
    }


def plan(
    stdout: str,
    stack_file: Path,
    lock_dir: Path,
    values: Mapping[str, Any],
    render_sha256: str | None = None,
) -> dict[str, Any]:
    """Facts -> verdict -> everything the roles need for this host, as plain data."""
    base, locked = load_stack(stack_file, lock_dir, render_sha256)
    patch = ansible_render.spec_overrides(base, locked, values)
    stack = ansible_render.apply_overrides(base, patch)
    problems = compat.problems(stack)
    if problems:
        raise spec.SpecErrors("inventory overrides of stack.yml", problems)
    probed = parse_probe(stdout)
    facts = probed.facts
    verdict = preflight.evaluate(facts, stack, locked)
    verdict.problems += front_end_problems(base, stack)
    result: dict[str, Any] = {
        "ok": verdict.ok,
        "problems": verdict.problems,
        "notes": verdict.notes,
        "facts": asdict(facts),
        "os_name": facts.os_name,
        "distribution": OS_NAMES.get(facts.os_id, (facts.os_id.capitalize(), ""))[0],
        "os_family": OS_NAMES.get(facts.os_id, ("", facts.os_id.capitalize()))[1],
        "has_gpu": bool(facts.gpus),
        "systemd": facts.systemd,
        "install_driver": verdict.install_driver,
        "overrides": patch,
        "environment_file": system.environment_file(stack),
        "profile_script": python.profile_script(stack),
        "apt_proxy": system.apt_proxy(stack.network.proxy) if stack.network.proxy else None,
        "apt_proxy_file": system.APT_PROXY_FILE,
    }
    target = verdict.target
    if not verdict.ok or target is None or verdict.python is None:
        return result
    if facts.gpus:
        try:
            result["driver"] = _driver(stack, probed)
        except DeployError as error:
            result.update(ok=False, problems=[*verdict.problems, str(error)])
            return result
    wheel = _build_wheel()
    layout = hostlayout.Layout(stack)
    identity = hostlayout.venv_id(target, wheel.sha256)
    venv_dir = layout.venv_dir(target, wheel.sha256)
    requirements = locked.requirements(target).resolve()
    # As the pyinfra deploy builds them (gpurig.deploys.llm_env.llm_env).
    marker = {
        "venv_id": identity,
        "target": target.name,
        "lock_sha256": target.sha256,
        "bloomkit_sha256": wheel.sha256,
        "python": verdict.python,
        "torch": target.torch,
    }
    result.update(
        target=target.name,
        variant=target.variant,
        torch=target.torch,
        python=verdict.python,
        uv_python=verdict.uv_python,
        python_request=verdict.python if verdict.uv_python else SYSTEM_PYTHON,
        uv_environment=python.uv_environment(stack, managed=verdict.uv_python),
        venv_id=identity,
        venvs_dir=layout.venvs_dir,
        venv_dir=venv_dir,
        venv_link=layout.venv_link,
        venv_python=f"{venv_dir}/{VENV_PYTHON}",
        requirements=str(requirements),
        requirements_dir=llm_env.REQUIREMENTS_DIR,
        requirements_path=f"{llm_env.REQUIREMENTS_DIR}/{identity}.txt",
        requirements_text=(requirements.read_text().rstrip("\n") + "\n" + wheel.requirement + "\n"),
        local_wheels=[
            {"name": name, "src": src, "sha256": sha}
            for name, (src, sha) in sorted(llm_env.pushed_wheels(target).items())
        ],
        bloomkit={
            "src": str(wheel.path),
            "name": wheel.path.name,
            "sha256": wheel.sha256,
            "requirement": wheel.requirement,
        },
        uv_args=target.uv_source_args(find_links=[hostlayout.WHEEL_DIR]),
        import_check=llm_env.import_check(target),
        marker=marker_json(marker),
        smoke_command=smoke.command(
            smoke.SmokeRun(
                user=stack.host.user,
                report=stack.host.report,
                timeout_s=stack.smoke.timeout_s,
                args=smoke_args(stack, bool(facts.gpus)),
                reports_dir="",  # the smoke role fetches the report itself
            )
        ),
        smoke_timeout_s=stack.smoke.timeout_s,
        smoke_user=stack.host.user,
        smoke_report=stack.host.report,
    )
    return result


@dataclass(frozen=True)
class HostOutcome:
    """How far a host got in a playbook run."""

    verdict: str | None  # set by the smoke role: pass, fail, no report, skipped
    preflight: Mapping[str, Any] | None  # the gpurig host fact, when preflight ran
    smoke_exit: int | None = None
    failure: str | None = None  # the failed task and its message, when a stage failed


def _reason(outcome: HostOutcome) -> str:
    """Why a host has no smoke report, in the pyinfra deploy's words."""
    plan = outcome.preflight
    if outcome.verdict == NO_REPORT:
        timeout = (plan or {}).get("smoke_timeout_s")
        if outcome.smoke_exit == smoke.TIMED_OUT:
            return f"smoke: timed out after {timeout} s (smoke.timeout_s) and wrote no report"
        code = outcome.smoke_exit if outcome.smoke_exit is not None else "?"
        return f"smoke: exited {code} without a report"
    if plan is not None and not plan.get("ok"):
        return "preflight: " + "; ".join(plan.get("problems") or [])
    if outcome.failure:
        return f"failed at {' '.join(outcome.failure.split())}"
    if plan is None:
        return "could not connect: is the host up and its key known?"
    return "failed before the smoke test (see the task that failed above)"


def fleet_summary(
    reports_dir: Path, outcomes: Mapping[str, HostOutcome], started: float
) -> tuple[bool, list[str]]:
    """Reports for every host of the run, the run file `gpurig report` reads, and the summary
    gpurig.report prints for it, as text lines; False when a host failed."""
    hosts: dict[str, dict[str, Any]] = {}
    for host, outcome in outcomes.items():
        if outcome.verdict in (report.PASS, report.FAIL):  # bloomkit's own report, fetched
            status = (
                "reported" if outcome.verdict == report.PASS and not outcome.failure else "failed"
            )
        elif outcome.verdict == report.SKIPPED and not outcome.failure:
            status = "skipped"
        else:
            facts = (outcome.preflight or {}).get("facts") or {}
            os_name = f"{facts['os_id']}-{facts['os_version']}" if facts.get("os_id") else None
            report.write(reports_dir, host, report.failure_report(host, _reason(outcome), os_name))
            status = "failed"
        hosts[host] = {"status": status, "changed": []}
    run = {"started": started, "finished": time.time(), "hosts": hosts}
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / report.RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    out = io.StringIO()
    console = Console(file=out, width=140, color_system=None, highlight=False)
    ok = report.print_summary(report.load_run(reports_dir), console)
    return ok, [line.rstrip() for line in out.getvalue().rstrip().splitlines()]
