"""GPURIG_HOSTS parsing, the sandbox fallback, and inventory.py as pyinfra loads it."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import InventoryError

from gpurig import inventory
from gpurig.errors import UsageError
from gpurig.inventory import HostSpec, ansible_inventory, parse_hosts, pyinfra_groups
from gpurig.sandbox.state import SandboxHost, StateDir

REPO_ROOT = Path(__file__).resolve().parents[2]


# pyinfra_cli gevent-patches the process that imports it: load inventories in a child.
_LOAD = """
import json, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files
with ctx_state.use(State()):
    inventory = make_inventory_from_files(sys.argv[1])
print(json.dumps({h.name: {"groups": sorted(h.groups), "data": h.data.dict()} for h in inventory},
                 default=str))
"""


def load(path: Path) -> dict[str, Any]:
    """What `pyinfra PATH ...` builds, by name: the file is executed by path, never imported."""
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, str(path)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def groups_of(path: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The module-level lists pyinfra takes as groups, from running the file in-process."""
    names = runpy.run_path(str(path))
    return {k: v for k, v in names.items() if isinstance(v, list) and not k.startswith("_")}


@pytest.fixture
def no_hosts_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("GPURIG_HOSTS", raising=False)
    monkeypatch.setenv("GPURIG_SANDBOX_DIR", str(tmp_path / "sandbox"))
    return tmp_path / "sandbox"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("debian@gpu1.example.com", [HostSpec("debian", "gpu1.example.com", 22)]),
        (
            " root@192.0.2.7:2222 , ubuntu@gpu2.example.com,",
            [HostSpec("root", "192.0.2.7", 2222), HostSpec("ubuntu", "gpu2.example.com", 22)],
        ),
        ("me@[2001:db8::5]:2200", [HostSpec("me", "2001:db8::5", 2200)]),
        ("me@[2001:db8::5]", [HostSpec("me", "2001:db8::5", 22)]),
    ],
)
def test_good_hosts_parse(value: str, expected: list[HostSpec]) -> None:
    assert parse_hosts(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "GPURIG_HOSTS is empty"),
        (" , ", "GPURIG_HOSTS is empty"),
        ("gpu1.example.com", "entry 'gpu1.example.com': expected user@host[:port]"),
        ("debian@", "expected user@host[:port]"),
        ("@gpu1.example.com", "expected user@host[:port]"),
        ("a@b@c", "expected user@host[:port]"),
        ("debian@gpu1:22:22", "expected user@host[:port]"),
        ("debian@gpu1:0", "port must be 1-65535"),
        ("debian@gpu1:65536", "port must be 1-65535"),
        ("debian@gpu1:ssh", "port must be 1-65535"),
        ("debian@gpu1,root@gpu1:22", "lists gpu1 more than once"),
        ("{{ 7 * 7 }}@gpu1", "expected user@host[:port]"),
        ("debian@$(id)", "expected user@host[:port]"),
        ("debian@-oProxyCommand=id", "expected user@host[:port]"),
    ],
)
def test_bad_hosts_name_the_entry_and_the_fix(value: str, message: str) -> None:
    with pytest.raises(UsageError, match="GPURIG_HOSTS") as caught:
        parse_hosts(value)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_names_carry_the_port_only_when_it_is_not_22() -> None:
    assert HostSpec("u", "gpu1", 22).name == "gpu1"
    assert HostSpec("u", "gpu1", 2222).name == "gpu1:2222"
    assert HostSpec("u", "2001:db8::5", 2222).name == "[2001:db8::5]:2222"


def test_listed_hosts_are_strict_and_use_the_given_key(
    monkeypatch: pytest.MonkeyPatch, no_hosts_env: Path
) -> None:
    monkeypatch.setenv("GPURIG_HOSTS", "debian@gpu1.example.com:2200")
    monkeypatch.setenv("GPURIG_SSH_KEY", "/keys/fleet")
    monkeypatch.setenv("GPURIG_KNOWN_HOSTS", "/keys/known_hosts")
    assert pyinfra_groups() == {
        "hosts": [
            (
                "gpu1.example.com:2200",
                {
                    "ssh_hostname": "gpu1.example.com",
                    "ssh_user": "debian",
                    "ssh_port": 2200,
                    "ssh_key": "/keys/fleet",
                    "ssh_known_hosts_file": "/keys/known_hosts",
                    "ssh_strict_host_key_checking": "yes",
                    "ssh_paramiko_connect_kwargs": {"transport_factory": inventory.aead_first},
                },
            )
        ]
    }
    group = ansible_inventory()["all"]["children"]["hosts"]
    assert group["hosts"]["gpu1.example.com:2200"]["ansible_port"] == 2200
    assert "StrictHostKeyChecking=yes" in group["vars"]["ansible_ssh_common_args"]


def test_no_hosts_says_how_to_get_some(no_hosts_env: Path) -> None:
    with pytest.raises(UsageError, match=r"set GPURIG_HOSTS=user@host\[:port\]"):
        pyinfra_groups()
    with pytest.raises(InventoryError, match="gpurig sandbox up"):
        groups_of(REPO_ROOT / "inventory.py")


def test_sandbox_hosts_become_groups(no_hosts_env: Path) -> None:
    state = StateDir(no_hosts_env)
    state.save_hosts(
        [
            SandboxHost("sandbox-1", "127.0.0.1", 40001, "debian", "bookworm", "c1", "H100"),
            SandboxHost("sandbox-2", "127.0.0.1", 40002, "debian", "trixie", "c2"),
        ]
    )
    groups = groups_of(REPO_ROOT / "inventory.py")
    assert {name: [h for h, _ in hosts] for name, hosts in groups.items()} == {
        "sandbox": ["sandbox-1", "sandbox-2"],
        "bookworm": ["sandbox-1"],
        "trixie": ["sandbox-2"],
    }
    data = load(REPO_ROOT / "inventory.py")["sandbox-1"]["data"]
    assert (data["ssh_hostname"], data["ssh_port"], data["ssh_user"]) == (
        "127.0.0.1",
        40001,
        "debian",
    )
    assert data["ssh_key"] == str(state.key_file)
    assert data["ssh_known_hosts_file"] == str(state.known_hosts_file)
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert data["sandbox_pretend_gpu"] == "H100"


def test_listed_hosts_win_over_the_sandbox(
    monkeypatch: pytest.MonkeyPatch, no_hosts_env: Path
) -> None:
    no_hosts_env.mkdir()
    (no_hosts_env / "hosts.json").write_text(json.dumps([]))
    monkeypatch.setenv("GPURIG_HOSTS", "debian@gpu1.example.com")
    assert [name for name, _ in groups_of(REPO_ROOT / "inventory.py")["hosts"]] == [
        "gpu1.example.com"
    ]


def test_example_inventories_load_with_their_group_data() -> None:
    fleet = load(REPO_ROOT / "inventory" / "gpu_fleet.py")
    h100, l4 = fleet["h100-01.gpu.example.com"], fleet["l4-02.gpu.example.com"]
    assert h100["groups"] == ["gpu_fleet", "h100"]
    assert h100["data"]["ssh_user"] == "debian"
    assert h100["data"]["gpurig_nvidia_require_gpu"] is True
    assert (l4["data"]["ssh_user"], l4["data"]["ssh_port"]) == ("ubuntu", 2222)
    assert all(h["data"]["ssh_strict_host_key_checking"] == "yes" for h in fleet.values())
    assert not any("Path" in h["data"] for h in fleet.values())  # no import leaked in

    cloud = load(REPO_ROOT / "inventory" / "cloud_via_bastion.py")
    config = Path(cloud["gpu-a.internal.example"]["data"]["ssh_config_file"])
    assert config.is_absolute()
    assert "ProxyJump bastion" in config.read_text()


def test_reading_the_inventory_does_not_import_paramiko() -> None:
    """`gpurig deploy` reads the inventory module and never connects itself: paramiko (a tenth
    of a second to import, on every run) is imported by pyinfra's connections alone."""
    code = "import sys, gpurig.commands.deploy; print('paramiko' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
