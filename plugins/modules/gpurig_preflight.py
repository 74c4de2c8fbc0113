#!/usr/bin/python
"""Documentation and argument spec of the gpurig_preflight action (it runs on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpurig_preflight
short_description: Check a host against gpurig's spec and lock, and compute its plan
description:
  - Runs the pyinfra deploy's fact probe on the host as the SSH user (OS, Python, glibc, disk,
    memory, sudo, systemd, NVIDIA GPUs on the PCI bus, the loaded driver, Secure Boot, and,
    where stack.yml lists an C(auto) model, whether the host reaches the Hugging Face Hub: a
    host that does not gets those models pushed from the controller).
  - On the controller, loads the spec and the lock, applies the host's overrides (the
    vocabulary of docs/overrides.md, shared with the pyinfra deploy), and computes the host's
    plan with gpurig.plan, the same verdict and steps as the pyinfra deploy.
  - Sets the host fact C(gpurig) with the verdict and the plan (its steps by id, the driver
    section). Fails the host when the verdict has problems.
  - Changes nothing on the host; supports check mode.
version_added: "0.1.0"
author: gpurig
options:
  stack_file:
    description: Controller path of stack.yml.
    type: path
    required: true
  lock_dir:
    description: Controller folder of the lock written by C(gpurig resolve).
    type: path
    required: true
notes:
  - An action plugin; needs gpurig importable by the Python that runs Ansible.
"""

EXAMPLES = r"""
- name: Check the host against the spec and the lock
  gpurig_preflight:
    stack_file: "{{ playbook_dir | dirname }}/stack.yml"
    lock_dir: "{{ playbook_dir | dirname }}/lock"
"""

RETURN = r"""
ansible_facts:
  description: C(gpurig), the verdict and the plan for this host.
  returned: always
  type: dict
  contains:
    gpurig:
      description: ok, problems, notes, facts, target, python, stages, steps and driver.
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 (docs first, as Ansible modules have them)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "stack_file": {"type": "path", "required": True},
            "lock_dir": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    module.fail_json(msg="gpurig_preflight is an action plugin: it runs on the controller")


if __name__ == "__main__":
    main()
