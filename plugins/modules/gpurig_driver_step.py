#!/usr/bin/python
"""Documentation and argument spec of the gpurig_driver_step action (it runs on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpurig_driver_step
short_description: Run one script step of a gpurig host plan, its failure named
description:
  - Runs a script from the host plan (the driver section's
    C(ansible_facts.gpurig.driver.scripts), or the apt step's) on the host, with become.
    A script that prints C(gpurig: unchanged) reports no change.
  - On failure, reads the host's GPU state again and fails with gpurig's named diagnoses and
    their fixes, as the pyinfra deploy does, instead of the raw output.
  - Runs nothing in check mode.
version_added: "0.2.0"
author: gpurig
options:
  script:
    description: The step's POSIX sh script, from the plan.
    type: str
    required: true
  context:
    description: The plan's diagnosis context (kernel, os_id, secure_boot, branch).
    type: dict
    required: false
  facts:
    description: The host's facts from preflight (C(ansible_facts.gpurig.facts)).
    type: dict
    required: false
notes:
  - An action plugin; needs gpurig importable by the Python that runs Ansible.
"""

EXAMPLES = r"""
- name: Build the NVIDIA module for the running kernel
  gpurig_driver_step:
    script: "{{ ansible_facts.gpurig.driver.scripts.build_module }}"
    context: "{{ ansible_facts.gpurig.driver.context }}"
    facts: "{{ ansible_facts.gpurig.facts }}"
"""

RETURN = r"""
diagnoses:
  description: The named diagnoses of a failed step, most likely cause first.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 (docs first, as Ansible modules have them)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "script": {"type": "str", "required": True},
            "context": {"type": "dict", "required": False},
            "facts": {"type": "dict", "required": False},
        },
        supports_check_mode=True,
    )
    module.fail_json(msg="gpurig_driver_step is an action plugin: it runs on the controller")


if __name__ == "__main__":
    main()
