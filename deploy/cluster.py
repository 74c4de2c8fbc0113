"""The cluster stage alone: `pyinfra inventory.py deploy/cluster.py` (docs/multinode.md).

For hosts the full deploy (deploy/gpu.py) has provisioned: re-forms the clusters after an
inventory change (cluster.env, gpurig-launch, the open-file limit) and changes nothing else.
"""

from pyinfra import config

from gpurig.deploys.cluster import cluster_node

config.SUDO = True

cluster_node()
