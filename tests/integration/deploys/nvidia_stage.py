"""Test deploy: preflight's facts and verdict, then the NVIDIA driver stage, and nothing else.

`pyinfra inventory.py tests/integration/deploys/nvidia_stage.py` with GPURIG_STACK naming the
stack to test. The lock is made up from the stack (every variant and Python locked): the
driver stage reads only the target's variant from it, and a real lock for a cu126 stack
cannot be resolved on a machine without PyTorch's index.
"""

import os
from pathlib import Path

from pyinfra import config, host

from gpurig import plan, preflight, spec
from gpurig.deploys import FACTS_KEY, VERDICT_KEY
from gpurig.deploys.nvidia import nvidia_driver
from gpurig.facts.preflight_probe import PreflightProbe
from gpurig.lock import Lock, Target, target_name
from gpurig.operations import control

config.SUDO = True

stack = spec.load(Path(os.environ["GPURIG_STACK"]))
targets = {}
for variant in stack.torch.variants:
    for python in stack.python:
        name = target_name(variant, python)
        targets[name] = Target(
            name, variant, python, f"{name}.txt", "", stack.sources.index, None, [], {}
        )
locked = Lock(Path("lock"), stack.digest(), targets, {})

probed = host.get_fact(PreflightProbe, venv=stack.host.venv, _sudo=False)
facts, state, sources = probed.facts, probed.gpu, probed.sources
verdict = preflight.evaluate(facts, stack, locked)
setattr(host.data, FACTS_KEY, facts)
setattr(host.data, VERDICT_KEY, verdict)
for note in verdict.notes:
    host.log(f"preflight: {note}")
if verdict.ok:
    knobs = {
        k: host.data.get(k)
        for k in ("gpurig_nvidia_hold_kernel", "gpurig_nvidia_unattended_upgrades")
    }
    nvidia_driver(plan.build(stack, facts, verdict, None, state, sources, knobs))
else:
    control.stop_host(name="Preflight: stop this host", reason="; ".join(verdict.problems))
