"""Stage 1, preflight: facts only, before any change.

Two facts (one round trip each: the system, and the GPU layer's) read the host;
`gpurig.preflight.evaluate` decides, as it does for `gpurig preflight` and the Ansible role.
A host with a problem gets a single operation that stops it with the reason; the deploy adds
nothing else for it, and the other hosts go on.
"""

from __future__ import annotations

from pyinfra import logger
from pyinfra.api.deploy import deploy
from pyinfra.context import host

from gpurig import preflight as checks
from gpurig.deploys import (
    FACTS_KEY,
    PREFIX,
    SPEC_DEFAULTS,
    VERDICT_KEY,
    controller,
    host_stack,
    overridden_lock_inputs,
)
from gpurig.deploys.verify import RUN, watch_run
from gpurig.facts import gpu
from gpurig.facts.system import HostProbe, dpkg_lock_holder, to_host_facts
from gpurig.model.host import HostFacts
from gpurig.operations import apt, control
from gpurig.preflight import Verdict
from gpurig.spec import Stack


def deploy_problems(stack: Stack, verdict: Verdict) -> list[str]:
    """What the deploy itself adds to `evaluate`: host data and install mode."""
    problems = []
    changed = overridden_lock_inputs(stack)
    if changed:
        problems.append(
            f"host data {', '.join(changed)} changes what lock/ was resolved from: set it in "
            "stack.yml and run `gpurig resolve`"
        )
    if stack.install.offline and verdict.uv_python:
        problems.append(
            f"offline install needs the distribution's python3 to be one of {stack.python}: "
            "uv cannot download a Python without an index (add this host's version to "
            "stack.yml's python and run `gpurig resolve`)"
        )
    return problems


def describe(verdict: Verdict, facts: HostFacts) -> str:
    assert verdict.target is not None
    python = f"uv Python {verdict.python}" if verdict.uv_python else f"python3 {verdict.python}"
    gpus = f"{len(facts.gpus)} NVIDIA GPU(s)" if facts.gpus else "no GPU"
    return f"{facts.os_name}, {gpus}, {python}: installs {verdict.target.name}"


@deploy("Preflight", data_defaults=SPEC_DEFAULTS)
def preflight() -> Verdict:
    """Check the host against the stack and the lock; the verdict goes into host data."""
    controller()  # a bad stack.yml or a stale lock stops the whole run, before any host
    watch_run()
    try:
        stack = host_stack()
    except ValueError as error:
        verdict = Verdict(problems=[str(error)])
    else:
        probe = host.get_fact(HostProbe, venv=stack.host.venv, _sudo=False)
        # The system, then the GPU layer's fact: PCI GPUs, driver, Secure Boot, kernel, DKMS.
        facts = gpu.apply(to_host_facts(probe), host.get_fact(gpu.GpuHost, _sudo=False))
        RUN.os_names[host.name] = facts.os_name
        verdict = checks.evaluate(facts, stack, controller().lock)
        verdict.problems += deploy_problems(stack, verdict)
        holder = dpkg_lock_holder(probe)
        if holder:
            verdict.notes.append(
                f"the dpkg lock is held by {holder}: apt waits up to {apt.LOCK_TIMEOUT_S} s for it"
            )
        setattr(host.data, FACTS_KEY, facts)
    setattr(host.data, VERDICT_KEY, verdict)
    for note in verdict.notes:
        host.log(f"preflight: {note}")
    if not verdict.ok:
        reason = "preflight: " + "; ".join(verdict.problems)
        host.log_styled(reason, fg="red", log_func=logger.warning)
        control.stop_host(name="Preflight: stop this host", reason=reason)
    else:
        host.log(f"preflight: {describe(verdict, facts)}")
    return verdict


def current_verdict() -> Verdict:
    verdict = host.data.get(VERDICT_KEY)
    if not isinstance(verdict, Verdict) or not verdict.ok or verdict.target is None:
        raise RuntimeError(f"{PREFIX}verdict is missing: run the preflight deploy first")
    return verdict
