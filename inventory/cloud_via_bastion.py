"""Example: cloud VMs on a private network, reached through a bastion (SSH jump host).

pyinfra 3.10 has no proxy-command data key: its SSH connector follows ProxyJump (and
ProxyCommand) from an ssh_config file, named per host with `ssh_config_file`. The same file
works for `ssh -F inventory/bastion.ssh_config gpu-a.internal.example` and for Ansible
(`ansible_ssh_common_args: -F inventory/bastion.ssh_config`).

    pyinfra inventory/cloud_via_bastion.py deploy/gpu.py
"""

from pathlib import Path

_SSH_CONFIG = str(Path(__file__).resolve().with_name("bastion.ssh_config"))

cloud = (
    ["gpu-a.internal.example", "gpu-b.internal.example"],
    {"ssh_config_file": _SSH_CONFIG, "ssh_user": "debian"},
)
