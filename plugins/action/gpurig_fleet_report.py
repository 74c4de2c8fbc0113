"""Action plugin: the fleet summary of a playbook run, by gpurig.ansible_report (its words are
gpurig.report's, as `gpurig report` prints them).

Hosts that ran the smoke test have their fetched report; hosts that stopped earlier get a
report written by gpurig.report.failure_report with the reason; hosts whose smoke test was
skipped (check mode, smoke disabled) show as skipped. It writes reports/.gpurig-run.json as the
pyinfra deploy does, so `gpurig report` afterwards shows this run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("reports_dir", "hosts", "started"))

    def run(
        self, tmp: str | None = None, task_vars: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        try:
            from gpurig import ansible_report
        except ImportError as error:
            raise AnsibleActionFail(f"gpurig is not importable ({error})") from None
        hosts = list(self._task.args.get("hosts") or [])
        if not hosts:
            result.update(changed=False, ok=False, summary=["no hosts ran"])
            return result
        hostvars = task_vars["hostvars"]
        outcomes = {}
        for name in hosts:
            host = hostvars[name]
            code = self._templar.template(host.get("gpurig_smoke_exit"))
            outcomes[name] = ansible_report.HostOutcome(
                verdict=self._templar.template(host.get("gpurig_smoke_verdict")),
                preflight=self._templar.template((host.get("ansible_facts") or {}).get("gpurig")),
                smoke_exit=int(code) if code not in (None, "") else None,
                failure=self._templar.template(host.get("gpurig_failure")),
            )
        started = float(self._task.args.get("started") or time.time())
        ok, lines = ansible_report.fleet_summary(
            Path(self._task.args["reports_dir"]), outcomes, started
        )
        # Not failed here: the play prints the summary first, then fails on `ok`.
        result.update(changed=False, ok=ok, summary=lines)
        return result
