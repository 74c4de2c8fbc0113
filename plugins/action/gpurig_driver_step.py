"""Action plugin: one script step of the plan, its failure named as pyinfra names it.

Runs the plan's script for the step (the driver's, gpurig.plan.driver_scripts, or the apt
step's) on the host with become. The
script prints `gpurig: unchanged` when the host needs nothing, so a converged host reports no
change. When it fails, the GPU fact is read again and gpurig.diagnose names the failure (DKMS
build failed, Secure Boot rejected the module, ...) with its fix, instead of dpkg's output;
the full log stays on the host under /var/log/gpurig/. Check mode runs nothing.
"""

from __future__ import annotations

import shlex
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

UNCHANGED = "gpurig: unchanged"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("script", "context", "facts"))

    def run(
        self, tmp: str | None = None, task_vars: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        args = self._task.args
        if not args.get("script"):
            raise AnsibleActionFail("gpurig_driver_step needs the plan's script")
        if self._play_context.check_mode:
            result.update(changed=True, stdout="", stdout_lines=[], msg="check mode: not run")
            return result
        try:
            from gpurig import ansible_bridge
        except ImportError as error:
            raise AnsibleActionFail(f"gpurig is not importable ({error})") from None
        run = self._low_level_execute_command(
            "/bin/sh -c " + shlex.quote(str(args["script"])), sudoable=True
        )
        output = "\n".join(part for part in (run["stdout"], run["stderr"]) if part)
        result.update(rc=run["rc"], stdout=run["stdout"], stdout_lines=run["stdout"].splitlines())
        if run["rc"] == 0:
            result["changed"] = UNCHANGED not in run["stdout"]
            return result
        probe = self._low_level_execute_command(ansible_bridge.gpu_probe_command(), sudoable=False)
        found = ansible_bridge.driver_diagnoses(
            output,
            args.get("context") or {},
            args.get("facts"),
            probe["stdout"] if probe["rc"] == 0 else "",
        )
        result.update(failed=True, changed=False, diagnoses=found, msg="; ".join(found))
        return result
