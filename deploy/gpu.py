"""The pyinfra deploy: `pyinfra inventory.py deploy/gpu.py` from the repo root, or `gpurig deploy`.

Thin on purpose: each stage is a reusable @deploy from gpurig.deploys that takes stack.yml
(GPURIG_STACK) as data defaults, which host and group data override (docs/deploy.md).
A host that fails preflight stops there with its reason; the other hosts go on. The fleet
summary prints when the run ends.
"""

from pyinfra import config

from gpurig.deploys.cluster import cluster_node  # multi-node training (docs/multinode.md)
from gpurig.deploys.llm_env import llm_env
from gpurig.deploys.nvidia import nvidia_driver
from gpurig.deploys.preflight import preflight
from gpurig.deploys.python import python
from gpurig.deploys.system import system
from gpurig.deploys.verify import verify

config.SUDO = True  # every change is made as root; preflight's facts run as the SSH user

verdict = preflight()
if verdict.ok:
    system()
    python()
    nvidia_driver(verdict)
    llm_env()
    cluster_node()  # only hosts in an inventory cluster get its files
    verify()
