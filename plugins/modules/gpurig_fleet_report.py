#!/usr/bin/python
"""Documentation and argument spec of the gpurig_fleet_report action (it runs on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpurig_fleet_report
short_description: The fleet summary of a gpurig playbook run
description:
  - Reads the smoke reports fetched to I(reports_dir) with gpurig.report, the same summary as
    C(gpurig report) and the pyinfra deploy print.
  - A host that stopped before its smoke test gets a report written by gpurig naming why
    (its preflight problems when there were any); a host whose smoke test was skipped (check
    mode, smoke disabled) is shown as skipped.
  - Never fails itself; returns C(ok) for the play to act on after printing C(summary).
version_added: "0.1.0"
author: gpurig
options:
  reports_dir:
    description: Controller folder of the reports, one <host>.json each.
    type: path
    required: true
  hosts:
    description: Inventory names of the hosts the run targeted.
    type: list
    elements: str
    required: true
  started:
    description: When the run started (seconds since the epoch), for the run file.
    type: float
    required: false
notes:
  - An action plugin; needs gpurig importable by the Python that runs Ansible.
"""

EXAMPLES = r"""
- name: Read the fetched reports
  gpurig_fleet_report:
    reports_dir: "{{ playbook_dir | dirname }}/reports"
    hosts: "{{ gpurig_fleet }}"
  register: fleet_report
"""

RETURN = r"""
ok:
  description: True when every host passed (or was skipped).
  returned: always
  type: bool
summary:
  description: The summary table and one line per failed host, as text lines.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 (docs first, as Ansible modules have them)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "reports_dir": {"type": "path", "required": True},
            "hosts": {"type": "list", "elements": "str", "required": True},
            "started": {"type": "float", "required": False},
        },
        supports_check_mode=True,
    )
    module.fail_json(msg="gpurig_fleet_report is an action plugin: it runs on the controller")


if __name__ == "__main__":
    main()
