"""The pyinfra deploy: `pyinfra inventory.py deploy/gpu.py` from the repo root, or `gpurig deploy`.

Thin on purpose: preflight computes each host's plan (gpurig.plan) from stack.yml
(GPURIG_STACK), the lock and the host's facts and data (docs/overrides.md); each later stage
renders its part of that plan. A host that fails preflight stops there with its reason; the
other hosts go on. The fleet summary prints when the run ends.
"""

from pyinfra import config

from gpurig.deploys import pyinfra_costs
from gpurig.deploys.cluster import cluster_node  # multi-node training (docs/multinode.md)
from gpurig.deploys.nvidia import nvidia_driver
from gpurig.deploys.preflight import preflight
from gpurig.deploys.stages import containers, dcgm, llm_env, python, system
from gpurig.deploys.verify import verify

config.SUDO = True  # every change is made as root; preflight's facts run as the SSH user
pyinfra_costs.install()  # two per-operation costs of pyinfra's, made cheap (same answers)

plan = preflight()
if plan.ok:
    system()
    python()
    nvidia_driver(plan)
    llm_env()
    containers()  # stack.yml containers: (opt-in)
    dcgm()  # stack.yml dcgm: (opt-in)
    cluster_node()  # only hosts in an inventory cluster get its files
    verify()
