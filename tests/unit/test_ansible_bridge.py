"""The controller side of the Ansible roles: the same facts, verdict and plan as pyinfra."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpurig import ansible_bridge, ansible_report, bloomkit_wheel, hostlayout, lock, report, spec
from gpurig.bloomkit_wheel import Wheel
from gpurig.plan import python as plan_python
from gpurig.plan import system as plan_system

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK = REPO_ROOT / "stack.yml"
LOCK = REPO_ROOT / "lock"

# What the probe printed on a fresh bookworm sandbox host (no GPU, no systemd).
BOOKWORM = """\
os_id=debian
os_version=12
arch=x86_64
python3=3.11
glibc=2.36
disk_kb=46541704
mem_kb=24684092
uid=1000
sudo=1
systemd=0
@@gpurig-gpu-fact
@@pci
sysfs
@@driver
@@smi
@@secureboot
no-efi
@@modules
@@kernel
6.1.0-25-cloud-amd64
module=
@@packages
@@init
container
@@gpurig-apt-sources
##PYINFRA_FILE /etc/apt/sources.list
deb http://deb.debian.org/debian bookworm main
"""
H100_PCI = '0000:00:05.0 "0302" "10de" "2330" -ra1 "10de" "16c1"'


def _host(text: str = BOOKWORM, **changes: str) -> str:
    for key, value in changes.items():
        text = "\n".join(
            f"{key}={value}" if line.startswith(f"{key}=") else line for line in text.splitlines()
        )
    return text + "\n"


def _with_gpu(text: str) -> str:
    return text.replace("@@pci\nsysfs\n", f"@@pci\nlspci\n{H100_PCI}\n")


@pytest.fixture(autouse=True)
def fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Wheel:
    wheel = Wheel(tmp_path / "bloomkit-0.1.0-py3-none-any.whl", "ab" * 32)
    wheel.path.write_bytes(b"a wheel")
    monkeypatch.setattr(bloomkit_wheel, "build_kept", lambda: wheel)
    ansible_bridge._controllers.clear()
    return wheel


def _plan(stdout: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    return ansible_bridge.host_plan(stdout, STACK, LOCK, values or {}).to_json()


def test_the_probe_is_the_pyinfra_deploys() -> None:
    from gpurig.facts.gpu import GpuHost
    from gpurig.facts.system import HostProbe

    shell, flag, script = shlex.split(ansible_bridge.probe_command("/opt/gpurig/venv"))
    assert (shell, flag) == ("/bin/sh", "-c")
    assert HostProbe().command("/opt/gpurig/venv").strip() in script
    assert GpuHost().command().strip() in script


def test_parse_probe_reads_a_bookworm_host() -> None:
    probed = ansible_bridge.parse_probe(BOOKWORM)
    assert (probed.facts.os_id, probed.facts.os_version) == ("debian", "12")
    assert probed.facts.python3 == "3.11"
    assert probed.facts.gpus == []
    assert probed.facts.sudo
    assert not probed.facts.systemd
    assert probed.sources[0]["distribution"] == "bookworm"


def test_parse_probe_refuses_empty_output() -> None:
    with pytest.raises(ansible_bridge.GpurigError, match="no facts"):
        ansible_bridge.parse_probe("bash: oops\n")


def test_plan_for_a_cpu_host(fake_wheel: Wheel) -> None:
    plan = _plan(_host())
    stack = spec.load(STACK)
    target = lock.load(LOCK).targets["cpu-cp311"]
    assert plan["ok"], plan["problems"]
    assert plan["target"] == "cpu-cp311"
    assert (plan["distribution"], plan["os_family"]) == ("Debian", "Debian")  # role OS dispatch
    steps = plan["steps"]
    assert plan["stages"]["system"] == [
        "system.ca",
        "system.apt_proxy",
        "system.apt",
        "system.user",
        "system.environment",
        "system.folders",
    ]
    assert steps["system.environment"]["content"] == plan_system.environment_file(stack)
    assert steps["python.profile"]["content"] == plan_python.profile_script(stack)
    venv = steps["llm_env.venv"]
    assert venv["venv_dir"] == hostlayout.Layout(stack).venv_dir(target, fake_wheel.sha256)
    assert json.loads(venv["marker"]) == {
        "venv_id": hostlayout.venv_id(target, fake_wheel.sha256),
        "target": "cpu-cp311",
        "lock_sha256": target.sha256,
        "bloomkit_sha256": fake_wheel.sha256,
        "python": "3.11",
        "torch": target.torch,
    }
    assert "--python /usr/bin/python3" in venv["script"]
    assert f"--find-links {hostlayout.WHEEL_DIR}" in venv["script"]
    requirements = steps["llm_env.requirements"]["content"]
    assert requirements.endswith(fake_wheel.requirement + "\n")
    wheels = [w["name"] for w in steps["llm_env.wheels"]["wheels"]]
    assert wheels == sorted([*target.local_wheels, fake_wheel.path.name])
    assert "runuser -l gpurig" in steps["verify.smoke"]["command"]
    assert "--require-gpu" not in steps["verify.smoke"]["command"]
    json.dumps(plan)  # everything is plain data for Ansible


def test_plan_for_a_gpu_less_trixie_host_takes_the_cuda_build() -> None:
    plan = _plan(_host(os_version="13", python3="3.13"))
    assert plan["ok"], plan["problems"]
    assert plan["target"] == "cu130-cp313"
    assert any("runs on the CPU" in note for note in plan["notes"])


def test_plan_for_a_gpu_host_carries_the_gpu_layers_driver_plan() -> None:
    plan = _plan(_with_gpu(_host()))
    assert plan["ok"], plan["problems"]
    assert plan["has_gpu"]
    assert plan["install_driver"]
    assert plan["target"] == "cu130-cp311"
    driver = plan["driver"]
    assert driver["plan"]["source"] == "cuda"  # bookworm's archive has 535, the spec asks 580
    assert driver["plan"]["packages"] == ["cuda-drivers-580"]
    assert driver["plan"]["headers"][0] == "linux-headers-6.1.0-25-cloud-amd64"
    assert driver["cuda_keyring_script"]
    assert driver["reboot_timeout_s"] == 900
    assert "--require-gpu" in plan["steps"]["verify.smoke"]["command"]


def test_inventory_overrides_reach_the_verdict() -> None:
    plan = _plan(_host(), {"gpurig_nvidia_require_gpu": True})
    assert not plan["ok"]
    assert any("require_gpu" in p for p in plan["problems"])


def test_the_same_vocabulary_as_pyinfra() -> None:
    plan = _plan(_host(), {"gpurig_host_user": "llm", "gpurig_skip_smoke": True})
    assert plan["ok"], plan["problems"]
    assert plan["user"] == "llm"
    assert plan["steps"]["system.user"]["user"] == "llm"
    assert "verify.smoke" not in plan["steps"]


def test_overriding_a_lock_input_is_refused() -> None:
    plan = _plan(_host(), {"gpurig_torch_version": "2.9.1"})
    assert not plan["ok"]
    assert any("gpurig resolve" in p for p in plan["problems"])


def test_a_bad_override_stops_that_host_with_its_name() -> None:
    plan = _plan(_host(), {"gpurig_host_venv": "relative"})
    assert not plan["ok"]
    assert any("gpurig_host_venv" in p for p in plan["problems"])


def test_fleet_summary_writes_reasons_and_the_run_file(tmp_path: Path) -> None:
    report.write(tmp_path, "good", {"verdict": "pass", "env": {"os": "Debian 12"}})
    report.write(tmp_path, "bad", {"verdict": "fail", "failures": ["llm: loss is nan"]})
    refused = _plan(_host(), {"gpurig_nvidia_require_gpu": True})
    outcomes = {
        "good": ansible_report.HostOutcome("pass", {"ok": True}),
        "bad": ansible_report.HostOutcome("fail", {"ok": True}, 1, "Fail the host: smoke fail"),
        "apt": ansible_report.HostOutcome(None, {"ok": True}, None, "Install packages: E: 404"),
        "refused": ansible_report.HostOutcome(None, refused),
        "gone": ansible_report.HostOutcome(None, None),
        "timed-out": ansible_report.HostOutcome(
            "no report", {"steps": {"verify.smoke": {"timeout_s": 900}}}, 124
        ),
        "checked": ansible_report.HostOutcome("skipped", {"ok": True}),
    }
    ok, lines = ansible_report.fleet_summary(tmp_path, outcomes, started=1.0)
    assert not ok
    text = "\n".join(lines)
    assert "1 of 7 host(s) passed, 1 skipped, 5 failed" in text
    assert "refused fail: preflight:" in text
    assert "timed out after 900 s" in text
    assert "bad fail: llm: loss is nan" in text  # bloomkit's own report is kept
    assert "apt fail: failed at Install packages: E: 404" in text
    run = json.loads((tmp_path / report.RUN_FILE).read_text())
    assert run["hosts"]["checked"]["status"] == "skipped"
    assert run["hosts"]["gone"]["status"] == "failed"
    assert [r.host for r in report.load_run(tmp_path)] == list(outcomes)


def test_the_fleet_report_imports_neither_pyinfra_nor_the_plan() -> None:
    """The fleet report action imports gpurig.ansible_report alone: it stays light (seconds
    less per playbook run) only while it does not pull in the bridge's imports."""
    heavy = ("pyinfra", "gpurig.plan", "gpurig.controller", "gpurig.ansible_bridge")
    code = f"import sys, gpurig.ansible_report; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
