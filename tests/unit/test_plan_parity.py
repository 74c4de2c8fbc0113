"""Both front ends render the same plan, step by step, on a matrix of fixture hosts.

For each host, one HostPlan. The pyinfra side runs the real deploy stages in a pyinfra State
(facts injected: a fresh host, so every step plans its operations) and maps each operation back
to its plan step by name. The Ansible side reads the roles as the playbook runs them and lists
the plan steps each task renders (`steps['<id>']`, the driver's `scripts` by name). Both lists
must equal the plan's own order: a step added to the plan and rendered by one front end only
fails here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.api.facts import FactBase
from pyinfra.context import ctx_host, ctx_state

from gpurig import plan as host_plan
from gpurig import spec
from gpurig.bloomkit_wheel import Wheel
from gpurig.deploys import PLAN_KEY, stages, verify
from gpurig.deploys import nvidia as nvidia_stage
from gpurig.facts.gpu import parse as parse_gpu_fact
from gpurig.lock import load as load_lock
from gpurig.model.host import GpuState, HostFacts, pci_gpu
from gpurig.plan import ControllerFiles, HostPlan
from gpurig.plan.models import ModelFile, PushedModel
from gpurig.plan.steps import WheelFile
from gpurig.sandbox import doubles

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES = REPO_ROOT / "roles"
PLAYBOOK_ROLES = [
    "gpurig_system",
    "gpurig_python",
    "gpurig_nvidia",
    "gpurig_llm_env",
    "gpurig_containers",
    "gpurig_dcgm",
    "gpurig_smoke",
]
H100 = pci_gpu("0000:3b:00.0", "2330")
SOURCES = [
    {"type": "deb", "url": "http://deb.debian.org/debian", "distribution": codename,
     "components": ["main"], "options": {}}
    for codename in ("bookworm", "trixie")
]  # fmt: skip


@dataclass(frozen=True)
class Fixture:
    os_id: str
    os_version: str
    python3: str
    gpu: GpuState | None = None
    stack: dict[str, Any] | None = None  # changes to stack.yml's sections
    systemd: bool = False  # a host without a GPU runs systemd (a GPU host's comes from `gpu`)
    hub: str | None = None  # preflight's Hub probe line (gpurig.facts.hub)


def _gpu(**fields: Any) -> GpuState:
    base = GpuState(gpus=[H100], kernel="6.1.0-25-cloud-amd64", systemd=True, secure_boot=False)
    return replace(base, **fields)


def _shape(sku: str, **fields: Any) -> GpuState:
    """What the GPU fact reads on a pretend-GPU sandbox host of this shape (gpurig.sandbox
    .doubles: HGX-H100 has eight GPUs and four NVSwitches; *-535 a loaded 535 driver)."""
    read = parse_gpu_fact(doubles.fact_lines(doubles.resolve_sku(sku)))
    base = {"kernel": "6.1.0-25-cloud-amd64", "systemd": True, "secure_boot": False}
    return replace(read, **(base | fields))


def _loaded_535() -> GpuState:
    """An H100 whose Debian 535 driver is installed and loaded."""
    return _gpu(
        driver_version="535.261.03",
        modules=["nvidia"],
        module_version="535.261.03",
        packages={"nvidia-kernel-dkms": "535.261.03-1"},
        smi_rc=0,
    )


FIXTURES = {
    "debian-12": Fixture("debian", "12", "3.11"),
    "debian-13": Fixture("debian", "13", "3.13"),
    "ubuntu-22.04": Fixture("ubuntu", "22.04", "3.10"),
    "ubuntu-24.04": Fixture("ubuntu", "24.04", "3.12"),
    "h100": Fixture("debian", "12", "3.11", _gpu()),
    "h100-secure-boot": Fixture("debian", "12", "3.11", _gpu(secure_boot=True)),
    "h100-ubuntu-secure-boot": Fixture(
        "ubuntu", "24.04", "3.12", _gpu(kernel="6.8.0-45-generic", secure_boot=True)
    ),
    "h100-driver-present": Fixture(
        "debian",
        "12",
        "3.11",
        _gpu(
            driver_version="580.65.06",
            modules=["nvidia"],
            module_version="580.65.06",
            packages={"cuda-drivers-580": "580.65.06-1"},
            smi_rc=0,
        ),
    ),
    # 535: too old for cu130, runs cu128 (the stack's CUDA 12 variant) as it is.
    "h100-driver-535": Fixture(
        "debian",
        "12",
        "3.11",
        _loaded_535(),
    ),
    # No driver: Debian's own 535 and the CUDA 12 variant, no NVIDIA repository at all.
    "h100-debian-535": Fixture(
        "debian",
        "12",
        "3.11",
        _gpu(),
        stack={
            "nvidia": {"driver_branch": 535},
            "torch": {"variants": ["cu128", "cpu"], "versions": {"cu128": "2.10.0"}},
        },
    ),
    # 470 (CUDA 11.4): runs none of the stack's variants, so the driver is replaced.
    "h100-driver-too-old": Fixture(
        "debian",
        "12",
        "3.11",
        _gpu(
            driver_version="470.256.02",
            modules=["nvidia"],
            module_version="470.256.02",
            packages={"nvidia-kernel-dkms": "470.256.02-1"},
        ),
    ),
    # The sandbox's shapes. HGX: the driver from NVIDIA's CUDA repository and
    # nvidia-fabricmanager-580 with it; with 535 loaded: kept, and nvidia-fabricmanager-535.
    "hgx": Fixture("debian", "12", "3.11", _shape("HGX-H100")),
    "hgx-ubuntu": Fixture("ubuntu", "24.04", "3.12", _shape("HGX-H100", kernel="6.8.0-45-generic")),
    "hgx-driver-535": Fixture("debian", "12", "3.11", _shape("HGX-H100-535")),
    "h100-535-shape": Fixture("debian", "12", "3.11", _shape("H100-535")),
    "offline": Fixture(
        "debian", "12", "3.11", stack={"install": {"offline": True, "wheelhouse": "/srv/w"}}
    ),
    "proxy": Fixture(
        "debian", "12", "3.11", stack={"network": {"proxy": "http://proxy.corp:3128"}}
    ),
    # stack.yml's models: one pushed from the controller's cache, one the host downloads.
    "models": Fixture(
        "debian",
        "12",
        "3.11",
        stack={
            "models": [
                {"repo": "org/pushed", "revision": "a" * 40, "source": "controller"},
                {"repo": "org/fetched", "revision": "b" * 40},
            ]
        },
    ),
    # An `auto` model on a host whose preflight found no way to the Hub: pushed, as offline.
    "models-no-hub": Fixture(
        "debian",
        "12",
        "3.11",
        stack={"models": [{"repo": "org/auto", "revision": "c" * 40}]},
        hub="000 000 6 https://huggingface.co",
    ),
    # Opt-in GPU services: the engine alone without a GPU; on a pretend H100 with systemd the
    # NVIDIA container toolkit, the image smoke, and DCGM 4 for the driver's CUDA major.
    "containers": Fixture(
        "debian", "12", "3.11", stack={"containers": {"enabled": True}}, systemd=True
    ),
    "h100-containers-dcgm": Fixture(
        "debian",
        "12",
        "3.11",
        _gpu(),
        stack={"containers": {"enabled": True}, "dcgm": {"enabled": True, "diag_level": 2}},
        systemd=True,
    ),
    "h100-driver-535-dcgm": Fixture(
        "debian",
        "12",
        "3.11",
        _loaded_535(),
        stack={"dcgm": {"enabled": True}},
    ),
}


def _stack(fixture: Fixture) -> spec.Stack:
    stack = spec.load(REPO_ROOT / "stack.yml")
    data = stack.model_dump()
    data["python"] = sorted({*data["python"], fixture.python3})
    for section, values in (fixture.stack or {}).items():
        if isinstance(values, list):
            data[section] = values
        else:
            data[section].update(values)
    return spec.Stack.model_validate(data)


def make_plan(fixture: Fixture, tmp_path: Path, refused: bool = False) -> HostPlan:
    stack = _stack(fixture)
    facts = HostFacts(
        fixture.os_id, fixture.os_version, "x86_64", fixture.python3, "2.36", 100.0, 64.0, True,
        fixture.gpu is not None or fixture.systemd,
    )  # fmt: skip
    if fixture.gpu:
        facts = replace(facts, gpus=fixture.gpu.gpus, driver_version=fixture.gpu.driver_version)
    facts = replace(facts, hub=fixture.hub)
    locked = load_lock(REPO_ROOT / "lock")
    verdict = host_plan.preflight.evaluate(facts, stack, locked)
    verdict.problems = [p for p in verdict.problems if "lock" not in p]  # python list widened
    if verdict.target is None:  # the fixture's Python has no target: take the spec's first
        verdict.target = locked.targets["cpu-cp311"]
        verdict.python = "3.11"
        verdict.uv_python = fixture.python3 != "3.11"
    wheel = Wheel(tmp_path / "bloomkit-0.1.0-py3-none-any.whl", "ab" * 32)
    wheel.path.write_bytes(b"wheel")
    (tmp_path / "uv").write_bytes(b"uv")
    files = ControllerFiles(
        wheel=wheel,
        uv=(str(tmp_path / "uv"), "cd" * 32),
        ca_sha256="ef" * 32 if stack.network.ca_bundle else None,
        requirements="torch==2.13.0 --hash=sha256:00\n",
        wheels=[WheelFile(wheel.path.name, str(wheel.path), wheel.sha256)],
        models=[
            PushedModel(
                m.repo, m.revision, [ModelFile("config.json", "c" * 40, 2)], {"c" * 40: "/c"}
            )
            for m in host_plan.models.pushed(stack, facts)
        ],
    )
    built = host_plan.build(stack, facts, verdict, files, fixture.gpu, SOURCES, {})
    assert built.ok != refused, built.verdict.problems
    return built


# pyinfra ------------------------------------------------------------------------------------


def pyinfra_order(built: HostPlan) -> list[str]:
    """The plan steps the pyinfra deploy renders, in its order, mapped back from op names."""
    inventory = Inventory((["host-1"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("host-1")
    gpu = built.driver and built.facts.gpus

    def get_fact(cls: type[FactBase[Any]], *args: Any, **kwargs: Any) -> Any:
        if cls.__name__ == "GpuHost":
            return _gpu_state(built)
        return cls.default()  # a fresh host: nothing is there yet

    host.get_fact = get_fact  # type: ignore[method-assign]
    setattr(host.data, PLAN_KEY, built)
    state.activate_host(host)
    for stage in (stages.system, stages.python):
        add_deploy(state, stage)
    if gpu:
        add_deploy(state, nvidia_stage.nvidia_driver, built)
    add_deploy(state, stages.llm_env)
    add_deploy(state, stages.containers)
    add_deploy(state, stages.dcgm)
    add_deploy(state, verify.verify)
    by_name = {step.name: step.id for step in built.steps()}
    if built.driver:
        names = host_plan.driver_scripts.names(built.driver)
        by_name |= {name: f"driver.{step}" for step, name in names.items()}
    order: list[str] = []
    for op_hash in state.get_op_order():
        name = sorted(state.op_meta[op_hash].names)[0].split(" | ", 1)[1]
        step = by_name.get(name) or by_name.get(name.split(": /", 1)[0])
        if step and step not in order:
            order.append(step)
    return order


def _gpu_state(built: HostPlan) -> GpuState:
    return GpuState(gpus=built.facts.gpus, kernel=built.driver.context.kernel or "")  # type: ignore[union-attr]


# Ansible ------------------------------------------------------------------------------------

STEP = re.compile(r"steps\['([a-z_.]+)'\]")
SCRIPT = re.compile(r"scripts\.([a-z_]+)|'([a-z_]+)'")


def _tasks(path: Path) -> list[dict[str, Any]]:
    """A task file's tasks in order, include_tasks expanded (OS dispatch: Debian)."""
    out = []
    for task in yaml.safe_load(path.read_text()) or []:
        include = task.get("ansible.builtin.include_tasks")
        if include:
            out.append({"name": task.get("name"), "_when": task.get("when")})
            out += _tasks(
                path.parent / include.replace("{{ ansible_facts.gpurig.os_family }}", "Debian")
            )
        else:
            out.append(task)
    return out


def ansible_order(built: HostPlan) -> list[str]:
    """The plan steps the roles render, in playbook order, limited to this plan's steps."""
    present = {step.id for step in built.steps()}
    scripts = set(host_plan.driver_scripts.scripts(built.driver)) if built.driver else set()
    order: list[str] = []
    for role in PLAYBOOK_ROLES:
        if role == "gpurig_nvidia" and not built.driver:
            continue
        for task in _tasks(ROLES / role / "tasks" / "main.yml"):
            text = json.dumps(task)
            found = STEP.findall(text)
            if "gpurig_driver_step" in task:  # a driver script by name, or a step's own script
                named = [a or b for a, b in SCRIPT.findall(text)]
                driver = [f"driver.{name}" for name in named if name in scripts]
                found = driver + found
            for step in found:
                if (step in present or step.startswith("driver.")) and step not in order:
                    order.append(step)
    return order


def plan_order(built: HostPlan) -> list[str]:
    ids = [
        step.id
        for stage in built.stages
        if stage.name in ("system", "python")
        for step in stage.steps
    ]
    if built.driver:
        ids += [f"driver.{s}" for s in host_plan.driver_scripts.scripts(built.driver)]
    ids += [
        step.id
        for stage in built.stages
        if stage.name in ("llm_env", "containers", "dcgm", "verify")
        for step in stage.steps
    ]
    return ids


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_both_front_ends_render_the_plan_step_by_step(name: str, tmp_path: Path) -> None:
    built = make_plan(FIXTURES[name], tmp_path)
    wanted = plan_order(built)
    assert pyinfra_order(built) == wanted, "pyinfra"
    assert ansible_order(built) == wanted, "Ansible"


def test_the_matrix_covers_the_driver_paths(tmp_path: Path) -> None:
    plans = {name: make_plan(f, tmp_path) for name, f in FIXTURES.items()}
    assert plans["debian-12"].driver is None
    assert "secure_boot_key" in host_plan.driver_scripts.scripts(plans["h100-secure-boot"].driver)  # type: ignore[arg-type]
    ubuntu = plans["h100-ubuntu-secure-boot"].driver
    assert ubuntu is not None
    assert ubuntu.plan.precompiled
    present = plans["h100-driver-present"].driver
    assert present is not None
    assert not present.install
    assert plans["h100-driver-too-old"].verdict.install_driver
    debian_535 = plans["h100-debian-535"]
    assert debian_535.verdict.target is not None
    assert debian_535.verdict.target.name == "cu128-cp311"
    assert debian_535.driver is not None
    assert (debian_535.driver.plan.source, debian_535.driver.plan.branch) == ("debian", 535)
    assert debian_535.to_json()["driver"]["cuda_keyring_script"] is None  # no NVIDIA repository
    on_535 = plans["h100-driver-535"]
    assert not on_535.verdict.install_driver
    assert on_535.verdict.target is not None
    assert on_535.verdict.target.name == "cu128-cp311"
    assert on_535.driver is not None
    assert not on_535.driver.install
    assert "system.apt_proxy" in plans["proxy"].to_json()["steps"]
    assert "--offline" in plans["offline"].to_json()["steps"]["llm_env.venv"]["script"]
    placed = [s.id for s in plans["models"].stage("llm_env")]
    assert placed.index("llm_env.models") == placed.index("llm_env.venv") + 1
    (no_hub,) = [s for s in plans["models-no-hub"].steps() if s.id == "llm_env.models"]
    assert [u.label for u in getattr(no_hub, "uploads", [])] == ["org/auto/config.json"]


def _pyinfra_commands(built: HostPlan) -> dict[str, list[str]]:
    """The GPU stage's operations on a fresh systemd host: name -> the commands each would run."""
    inventory = Inventory((["host-1"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("host-1")
    fresh = replace(_gpu_state(built), systemd=True)

    def get_fact(cls: type[FactBase[Any]], *args: Any, **kwargs: Any) -> Any:
        return fresh if cls.__name__ == "GpuHost" else cls.default()

    host.get_fact = get_fact  # type: ignore[method-assign]
    setattr(host.data, PLAN_KEY, built)
    state.activate_host(host)
    add_deploy(state, nvidia_stage.nvidia_driver, built)
    commands = {}
    for op_hash in state.get_op_order():
        name = sorted(state.op_meta[op_hash].names)[0].split(" | ", 1)[1]
        generator = state.get_op_data_for_host(host, op_hash).command_generator
        with ctx_state.use(state), ctx_host.use(host):
            commands[name] = [str(getattr(c, "value", c)) for c in generator()]
    return commands


@pytest.mark.parametrize(
    ("name", "branch"), [("hgx", 580), ("hgx-ubuntu", 580), ("hgx-driver-535", 535)]
)
def test_an_hgx_host_gets_the_fabric_manager_at_the_drivers_version_held_with_it(
    name: str, branch: int, tmp_path: Path
) -> None:
    built = make_plan(FIXTURES[name], tmp_path)
    package = f"nvidia-fabricmanager-{branch}"
    driver = built.to_json()["driver"]
    assert driver["fabric"]["package"] == package
    assert driver["fabric"]["nvswitches"] == 4
    assert package in driver["driver_packages"]  # the drift lock's list, for both front ends
    install = driver["scripts"]["fabric_install"]
    assert f'"{package}=$version"' in install  # a pinned version, never the newest
    assert "apt-cache madison" in install
    # pyinfra: the same script, then apt-mark hold with the driver's packages.
    ops = _pyinfra_commands(built)
    assert ops["Install the fabric manager at the driver's version"] == [install]
    assert "systemctl start nvidia-fabricmanager" in "".join(
        ops["Start the fabric manager (nvidia-fabricmanager)"]
    )
    hold = ops["Hold the NVIDIA driver packages"]
    assert len(hold) == 1
    assert hold[0].startswith("apt-mark hold ")
    assert package in hold[0].split()
    # Ansible: the lock holds every driver_packages entry; fabric.yml runs the two scripts.
    lock = yaml.safe_load((ROLES / "gpurig_nvidia/tasks/lock.yml").read_text())
    assert lock[0]["loop"] == "{{ ansible_facts.gpurig.driver.driver_packages }}"
    order = ansible_order(built)
    assert order.index("driver.fabric_service") == order.index("driver.fabric_install") + 1


def test_a_host_without_nvswitches_gets_no_fabric_manager(tmp_path: Path) -> None:
    built = make_plan(FIXTURES["h100"], tmp_path)
    assert built.driver is not None
    assert built.driver.fabric is None
    assert "fabric_install" not in host_plan.driver_scripts.scripts(built.driver)


def test_the_535_shape_keeps_its_driver_and_runs_cuda_12(tmp_path: Path) -> None:
    """The sandbox's H100-535 host, as the GPU fact reads it: driver 535 kept, cu128 chosen,
    nothing installed, the driver checked; the same steps on both front ends (above)."""
    built = make_plan(FIXTURES["h100-535-shape"], tmp_path)
    assert built.facts.driver_version == doubles.DRIVER_535
    assert built.verdict.target is not None
    assert built.verdict.target.name == "cu128-cp311"
    assert built.driver is not None
    assert not built.driver.install
    assert list(host_plan.driver_scripts.scripts(built.driver)) == [
        "reboot_check",
        "smi_check",
        "persistence",
    ]


def test_debians_own_driver_on_an_hgx_board_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Debian packages no fabric manager: the plan refuses and names the branch to choose."""
    hgx = _shape("HGX-H100")
    built = make_plan(replace(FIXTURES["h100-debian-535"], gpu=hgx), tmp_path, refused=True)
    (problem,) = built.verdict.problems
    assert "4 NVSwitch devices" in problem
    assert "Debian's own 535 driver has no fabric manager package" in problem
    assert "set nvidia.driver_branch to a branch from NVIDIA's CUDA repository" in problem
    assert built.driver is None


def test_the_matrix_covers_the_gpu_services(tmp_path: Path) -> None:
    """containers: and dcgm: on the fixture hosts: what each host gets, and what it does not."""
    plans = {name: make_plan(FIXTURES[name], tmp_path) for name in FIXTURES}
    engine_only = plans["containers"].to_json()["steps"]
    assert engine_only["containers.engine"]["packages"] == ["docker.io"]
    assert "systemctl start docker" in engine_only["containers.engine_running"]["script"]
    assert "containers.toolkit" not in engine_only  # no GPU: no NVIDIA parts, no image smoke
    assert "verify.image_smoke" not in engine_only
    assert not any(s.startswith(("containers.", "dcgm.")) for s in plans["h100"].to_json()["steps"])

    gpu = plans["h100-containers-dcgm"]
    steps = gpu.to_json()["steps"]
    assert "C95B321B61E88C1809C4F759DDCAE044F796ECB0" in steps["containers.toolkit_key"]["script"]
    assert steps["containers.toolkit_list"]["content"].endswith(
        "deb [signed-by=/usr/share/keyrings/gpurig-nvidia-container-toolkit.gpg] "
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n"
    )
    assert steps["containers.toolkit"]["packages"] == ["nvidia-container-toolkit"]
    assert "nvidia-ctk runtime configure --runtime=docker" in steps["containers.runtime"]["script"]
    target = gpu.verdict.target
    assert target is not None
    tag = host_plan.image.image_tag(gpu.stack.digest(), target)
    assert tag.startswith("gpurig/bloomkit:cu130-cp311-")
    image_smoke = steps["verify.image_smoke"]["script"]
    assert "--gpus all --network none" in image_smoke
    assert f"{tag} smoke --json /gpurig-out/smoke.json --model tiny --require-gpu" in image_smoke
    # Driver 580 (installed here): DCGM 4 for CUDA 13, the diag at the spec's level.
    assert steps["dcgm.packages"]["packages"] == [
        "datacenter-gpu-manager-4-core", "datacenter-gpu-manager-4-cuda13",
        "datacenter-gpu-manager-4-proprietary", "datacenter-gpu-manager-4-proprietary-cuda13",
    ]  # fmt: skip
    assert steps["dcgm.hostengine"]["unit"] == "nvidia-dcgm"
    assert steps["verify.smoke"]["command"].count("--dcgm-diag 2") == 1
    # A loaded 535 driver: CUDA 12's DCGM; no containers asked for, none planned.
    on_535 = plans["h100-driver-535-dcgm"].to_json()["steps"]
    assert "datacenter-gpu-manager-4-cuda12" in on_535["dcgm.packages"]["packages"]
    assert not any(s.startswith("containers.") for s in on_535)


def test_dcgm_skips_consumer_gpus_and_hosts_without_systemd(tmp_path: Path) -> None:
    rtx = _gpu(gpus=[pci_gpu("0000:01:00.0", "2684")])  # GeForce RTX 4090
    consumer = make_plan(
        Fixture("debian", "12", "3.11", rtx, stack={"dcgm": {"enabled": True}}), tmp_path
    )
    assert not consumer.stage("dcgm")
    assert "DCGM skipped: NVIDIA GeForce RTX 4090 is not a datacenter GPU" in consumer.verdict.notes
    assert "--dcgm-diag" not in consumer.to_json()["steps"]["verify.smoke"]["command"]
    bare = make_plan(
        Fixture("debian", "12", "3.11", stack={"containers": {"enabled": True}}), tmp_path
    )
    assert [s.id for s in bare.stage("containers")] == ["containers.engine"]
    assert "no systemd: docker.io is installed, but nothing starts its daemon" in (
        bare.verdict.notes
    )
