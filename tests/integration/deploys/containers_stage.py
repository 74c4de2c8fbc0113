"""Test deploy: preflight's facts, then the containers stage of the plan, and nothing else.

`pyinfra inventory.py tests/integration/deploys/containers_stage.py` with GPURIG_STACK naming
a stack with containers.enabled. The stage's steps render through the deploy's own renderer
(gpurig.deploys.render), as `gpurig deploy` renders them; the venv and the smoke test, which
the stage does not need, are left out to keep the test short.
"""

import os
from pathlib import Path

from pyinfra import config, host

from gpurig import spec
from gpurig.deploys import FACTS_KEY
from gpurig.deploys.render import apply
from gpurig.facts.preflight_probe import PreflightProbe
from gpurig.plan import containers

config.SUDO = True

stack = spec.load(Path(os.environ["GPURIG_STACK"]))
facts = host.get_fact(PreflightProbe, venv=stack.host.venv, _sudo=False).facts
setattr(host.data, FACTS_KEY, facts)
for note in containers.notes(stack, facts):
    host.log(f"containers: {note}")
for step in containers.steps(stack, facts):
    apply(step)
