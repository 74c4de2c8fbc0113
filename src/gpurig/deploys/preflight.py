"""Stage 1, preflight: facts only, before any change; then the host's plan.

One fact (gpurig.facts.preflight_probe: the system, the GPU layer's and the apt sources, in one
round trip, as the Ansible role reads them) tells the host; the controller (gpurig.controller)
decides and plans, as it does for `gpurig preflight` and the Ansible role.
A host with a problem gets a single operation that stops it with the reason; the deploy adds
nothing else for it, and the other hosts go on. A host that passes gets one more round trip:
what of its plan it already has (gpurig.facts.in_place), which the later stages skip; the
wheels and big files it lacks start on their way then (gpurig.operations.early), beside the
steps before theirs.
"""

from __future__ import annotations

from pyinfra import logger
from pyinfra.api.deploy import deploy
from pyinfra.context import host

from gpurig.deploys import (
    EARLY_PUSH_KEY,
    FACTS_KEY,
    IN_PLACE_KEY,
    PLAN_KEY,
    PUSH_KEY,
    SPEC_DEFAULTS,
    VERDICT_KEY,
    controller,
    host_values,
)
from gpurig.deploys.progress import tracker
from gpurig.deploys.render import early_transfers
from gpurig.deploys.verify import RUN, watch_run
from gpurig.facts import in_place
from gpurig.facts.preflight_probe import PreflightProbe
from gpurig.facts.system import dpkg_lock_holder
from gpurig.hostlayout import CLUSTER_ENV, LAUNCHER, LIMITS_FILE
from gpurig.model.host import HostFacts
from gpurig.operations import control, early
from gpurig.plan import HostPlan
from gpurig.plan.system import APT_LOCK_TIMEOUT_S
from gpurig.preflight import Verdict


def describe(verdict: Verdict, facts: HostFacts) -> str:
    assert verdict.target is not None
    python = f"uv Python {verdict.python}" if verdict.uv_python else f"python3 {verdict.python}"
    gpus = f"{len(facts.gpus)} NVIDIA GPU(s)" if facts.gpus else "no GPU"
    return f"{facts.os_name}, {gpus}, {python}: installs {verdict.target.name}"


@deploy("Preflight", data_defaults=SPEC_DEFAULTS)
def preflight() -> HostPlan:
    """Check the host against the stack and the lock; the plan goes into host data."""
    tracker().begin(host.name, "preflight")  # its facts run before pyinfra's execution
    ctl = controller()  # a bad stack.yml or a stale lock stops the whole run, before any host
    watch_run()
    values = host_values()
    # The way to the Hub too, where an `auto` model may be downloaded (same round trip).
    hub = ctl.hub_probe(values)
    # The system, the GPU layer (PCI GPUs, driver, Secure Boot, kernel, DKMS), apt sources.
    probed = host.get_fact(PreflightProbe, venv=values["gpurig_host_venv"], hub=hub, _sudo=False)
    facts = probed.facts
    RUN.os_names[host.name] = facts.os_name
    plan = ctl.host_plan(values, facts, probed.gpu, probed.sources)
    verdict = plan.verdict
    holder = dpkg_lock_holder(probed.probe)
    if holder:
        verdict.notes.append(
            f"the dpkg lock is held by {holder}: apt waits up to {APT_LOCK_TIMEOUT_S} s for it"
        )
    setattr(host.data, FACTS_KEY, facts)
    setattr(host.data, VERDICT_KEY, verdict)
    setattr(host.data, PLAN_KEY, plan)
    for note in verdict.notes:
        host.log(f"preflight: {note}")
    if not verdict.ok:
        reason = "preflight: " + "; ".join(verdict.problems)
        host.log_styled(reason, fg="red", log_func=logger.warning)
        control.stop_host(name="Preflight: stop this host", reason=reason)
        tracker().end(host.name, "preflight", failure=reason)
    else:
        host.log(f"preflight: {describe(verdict, facts)}")
        # The cluster stage removes these from a host in no cluster.
        cluster_files = (CLUSTER_ENV, LAUNCHER, LIMITS_FILE)
        known = in_place.read(host, plan, cluster_files)
        setattr(host.data, IN_PLACE_KEY, known)
        if host.data.get(EARLY_PUSH_KEY):
            push = early.start(host, early_transfers(plan.steps(), known))
            setattr(host.data, PUSH_KEY, push)
        tracker().end(host.name, "preflight")
    return plan
