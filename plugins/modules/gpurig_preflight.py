#!/usr/bin/python
"""Documentation and argument spec of the gpurig_preflight action (it runs on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpurig_preflight
short_description: Check a host against gpurig's spec and lock, choose its locked target
description:
  - Runs the pyinfra deploy's fact probe on the host as the SSH user (OS, Python, glibc, disk,
    memory, sudo, systemd, NVIDIA GPUs on the PCI bus, the loaded driver, Secure Boot).
  - On the controller, loads the spec and the lock, applies inventory overrides of the roles'
    spec-tied variables, and calls gpurig.preflight.evaluate, the same verdict as the pyinfra
    deploy and C(gpurig preflight).
  - Sets the host fact C(gpurig) with the verdict and the install plan (target, venv path,
    wheels to push, uv index flags). Fails the host when the verdict has problems.
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
  venv:
    description: Live venv path on the host; free disk is measured where the venvs will live.
    type: path
    required: true
  render_sha256:
    description:
      - Digest the role defaults were rendered from; a stale render fails with the fix.
    type: str
    required: false
notes:
  - An action plugin; needs gpurig importable by the Python that runs Ansible.
"""

EXAMPLES = r"""
- name: Check the host against the spec and the lock
  gpurig_preflight:
    stack_file: "{{ playbook_dir | dirname }}/stack.yml"
    lock_dir: "{{ playbook_dir | dirname }}/lock"
    venv: /opt/gpurig/venv
"""

RETURN = r"""
ansible_facts:
  description: C(gpurig), the verdict and the plan for this host.
  returned: always
  type: dict
  contains:
    gpurig:
      description: ok, problems, notes, facts, target, python, venv_dir, uv_args and more.
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 (docs first, as Ansible modules have them)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "stack_file": {"type": "path", "required": True},
            "lock_dir": {"type": "path", "required": True},
            "venv": {"type": "path", "required": True},
            "render_sha256": {"type": "str", "required": False},
        },
        supports_check_mode=True,
    )
    module.fail_json(msg="gpurig_preflight is an action plugin: it runs on the controller")


if __name__ == "__main__":
    main()
