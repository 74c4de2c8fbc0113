"""Action plugin: gather a host's facts, then plan it on the controller with gpurig's own code.

The probe is the pyinfra deploy's (gpurig.facts), run as the SSH user in one round trip; the
plan is gpurig.plan's, through gpurig.ansible_bridge. The result is set as the host fact
`gpurig` (ansible_facts.gpurig): the verdict and the steps the other roles act on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class _RoleVars(Mapping[str, Any]):
    """The host's variables, each templated only when gpurig asks for it."""

    def __init__(self, templar: Any, task_vars: Mapping[str, Any]) -> None:
        self._templar = templar
        self._vars = task_vars

    def __getitem__(self, key: str) -> Any:
        return self._templar.template(self._vars[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True  # facts only: nothing on the host changes
    _VALID_ARGS = frozenset(("stack_file", "lock_dir"))

    def run(
        self, tmp: str | None = None, task_vars: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        missing = [name for name in ("stack_file", "lock_dir") if not args.get(name)]
        if missing:
            raise AnsibleActionFail(f"gpurig_preflight needs {', '.join(missing)}")
        try:
            from gpurig import ansible_bridge
            from gpurig.errors import GpurigError
        except ImportError as error:
            raise AnsibleActionFail(
                f"gpurig is not importable by the Python running Ansible ({error}): run "
                "ansible-playbook from the environment gpurig is installed in"
            ) from None
        values = _RoleVars(self._templar, task_vars)
        stack_file, lock_dir = Path(str(args["stack_file"])), Path(str(args["lock_dir"]))
        try:
            # Free disk is measured where this host's venvs will live.
            venv = ansible_bridge.venv_path(stack_file, lock_dir, values)
            # As the SSH user, not with become: the probe tests passwordless sudo itself.
            # The way to the Hub too, where an `auto` model may be downloaded.
            hub = ansible_bridge.hub_probe(stack_file, lock_dir, values)
            probe = self._low_level_execute_command(
                ansible_bridge.probe_command(venv, hub), sudoable=False
            )
            if probe["rc"] != 0:
                raise AnsibleActionFail(
                    f"the fact probe failed (rc {probe['rc']}): {probe['stderr']}"
                )
            planned = ansible_bridge.host_plan(probe["stdout"], stack_file, lock_dir, values)
            plan = planned.to_json()
            # What the host already has, every step's checks in one round trip (as root: some
            # files are readable by root only); the roles skip those steps.
            converged_probe = ansible_bridge.converged_probe(planned)
            if plan["ok"] and converged_probe:
                probed = self._low_level_execute_command(converged_probe, sudoable=True)
                if probed["rc"] == 0:
                    plan["converged"] = ansible_bridge.converged_steps(planned, probed["stdout"])
        except GpurigError as error:
            raise AnsibleActionFail(str(error)) from None
        result["changed"] = False
        if not plan["ok"]:
            # A refused host runs no step; its steps (the environment file's proxy
            # credentials among them) stay out of the failure, which is printed whole.
            plan = {**plan, "steps": {}, "driver": None}
        result["ansible_facts"] = {"gpurig": plan}
        # The plan carries file contents that may hold secrets: at -v and above Ansible would
        # print the whole fact. The next task prints the verdict; the facts are not templated
        # again (Ansible trusts no template in a plugin's result).
        result["_ansible_verbose_override"] = True
        if plan["ok"]:
            result["msg"] = f"{plan['target']} (Python {plan['python']})" + "".join(
                f"; {note}" for note in plan["notes"]
            )
        else:
            result["failed"] = True
            result["msg"] = "preflight refused this host: " + "; ".join(plan["problems"])
        return result
