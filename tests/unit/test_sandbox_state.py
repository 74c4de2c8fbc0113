"""A fleet's state dir: hosts.json round trip, known_hosts, the Ansible inventory, the key."""

from __future__ import annotations

import stat
from pathlib import Path

import paramiko
import pytest
import yaml

from gpurig.errors import GpurigError
from gpurig.sandbox.state import SandboxHost, StateDir

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1Ywf6jND8blnC8DPNYzWv7wP0KAb5MOqEm5bwhibLU"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMhW+SOKzmFWgWLNBe++lqze7OyDvioF/f7/vglvUrMZ"


def two_hosts() -> list[SandboxHost]:
    return [
        SandboxHost("sandbox-1", "127.0.0.1", 40001, "debian", "bookworm", "c-1", host_key=KEY_A),
        SandboxHost(
            "sandbox-2", "127.0.0.1", 40002, "debian", "trixie", "c-2", "H100", True, KEY_B
        ),
    ]


def test_hosts_round_trip_and_known_hosts_lines(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "fleet")
    state.save_hosts(two_hosts())
    assert state.load_hosts() == two_hosts()
    assert state.known_hosts_file.read_text().splitlines() == [
        f"[127.0.0.1]:40001 {KEY_A}",
        f"[127.0.0.1]:40002 {KEY_B}",
    ]
    # paramiko (and so pyinfra) finds each key under the [host]:port name OpenSSH uses
    keys = paramiko.HostKeys(str(state.known_hosts_file))
    assert keys.lookup("[127.0.0.1]:40002")["ssh-ed25519"].get_base64() == KEY_B.split()[1]
    for path in (state.hosts_file, state.known_hosts_file, state.ansible_inventory_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ansible_inventory_groups_and_strict_ssh(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save_hosts(two_hosts())
    children = yaml.safe_load(state.ansible_inventory_file.read_text())["all"]["children"]
    assert sorted(children) == ["bookworm", "sandbox", "trixie"]
    assert list(children["trixie"]["hosts"]) == ["sandbox-2"]
    sandbox = children["sandbox"]
    assert sandbox["hosts"]["sandbox-1"] == {
        "ansible_host": "127.0.0.1",
        "ansible_port": 40001,
        "ansible_user": "debian",
    }
    assert sandbox["vars"]["ansible_ssh_private_key_file"] == str(state.key_file)
    assert sandbox["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"
    args = sandbox["vars"]["ansible_ssh_common_args"]
    assert f"-o UserKnownHostsFile={state.known_hosts_file}" in args
    assert "-o StrictHostKeyChecking=yes" in args


def test_missing_hosts_file_is_an_empty_fleet(tmp_path: Path) -> None:
    assert StateDir(tmp_path / "nothing").load_hosts() == []


@pytest.mark.parametrize("text", ["{not json", '[{"name": "sandbox-1"}]', '{"hosts": []}'])
def test_a_broken_hosts_file_names_the_file_and_the_fix(tmp_path: Path, text: str) -> None:
    state = StateDir(tmp_path)
    state.hosts_file.write_text(text)
    with pytest.raises(GpurigError, match="gpurig sandbox down") as caught:
        state.load_hosts()
    assert str(state.hosts_file) in str(caught.value)


def test_controller_key_is_created_once_and_private(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "fleet")
    public = state.ensure_key()
    assert public.startswith("ssh-ed25519 ")
    assert state.ensure_key() == public
    assert stat.S_IMODE(state.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o700
    loaded = paramiko.Ed25519Key.from_private_key_file(str(state.key_file))
    assert public.split()[1] == loaded.get_base64()


def test_fleet_ids_differ_per_state_dir(tmp_path: Path) -> None:
    assert StateDir(tmp_path / "a").fleet_id != StateDir(tmp_path / "b").fleet_id
    assert StateDir(tmp_path / "a").fleet_id == StateDir(tmp_path / "a").fleet_id


def test_remove_files_leaves_nothing_of_ours(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "fleet")
    with state.locked():
        state.ensure_key()
        state.save_hosts(two_hosts())
        state.remove_files()
    assert not state.path.exists()


def test_remove_files_keeps_what_is_not_ours(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save_hosts(two_hosts())
    (tmp_path / "notes.txt").write_text("mine")
    state.remove_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("name", ["{{ lookup('pipe', 'id') }}", "with space", "$(id)", "it's"])
def test_a_state_dir_that_could_template_or_split_is_refused(tmp_path: Path, name: str) -> None:
    state = StateDir(tmp_path / name)
    with pytest.raises(GpurigError, match="without spaces, quotes"):
        state.save_hosts(two_hosts())
    assert not state.hosts_file.exists()
    with pytest.raises(GpurigError, match="without spaces, quotes"):
        state.ensure_key()  # `sandbox up` asks for it before any host starts
