"""Preflight's way-to-the-Hub test (gpurig.facts.hub) and the models step's source it decides:
an `auto` model goes to a host that cannot reach the Hub the way it goes to an offline one."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpurig import ansible_bridge, bloomkit_wheel, spec
from gpurig.bloomkit_wheel import Wheel
from gpurig.controller import Controller
from gpurig.facts import hub
from gpurig.facts.system import HostProbe, to_host_facts
from gpurig.lock import load as load_lock
from gpurig.model.host import HostFacts
from gpurig.plan import models
from gpurig.plan.models import Models
from gpurig.sandbox.hubcache import lay_out

REPO_ROOT = Path(__file__).resolve().parents[2]
REV = "a" * 40
UNREACHABLE = "000 000 6 https://huggingface.co"
FACTS = HostFacts("debian", "12", "x86_64", "3.11", "2.36", 100.0, 64.0, True, False)


def _stack(entries: list[dict[str, str]], **sections: dict[str, Any]) -> spec.Stack:
    data = spec.load(REPO_ROOT / "stack.yml").model_dump()
    data["models"] = entries
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return spec.Stack.model_validate(data)


AUTO = [{"repo": "org/auto", "revision": REV}]


@pytest.mark.parametrize(
    ("line", "ca", "reachable", "said"),
    [
        ("200 000 0 https://huggingface.co", False, True, "HTTP 200"),
        ("401 000 0 https://mirror.corp", False, True, "mirror.corp answers"),
        ("000 407 56 https://huggingface.co", False, True, "credentials"),
        ("000 000 60 https://huggingface.co", True, True, "CA bundle"),
        ("000 000 60 https://huggingface.co", False, False, "not trusted"),
        ("000 403 56 https://huggingface.co", False, False, "proxy refused it (HTTP 403)"),
        (UNREACHABLE, False, False, "does not resolve"),
        ("000 000 28 https://huggingface.co", False, False, "time limit"),
        ("000 000 7 https://huggingface.co", False, False, "refused"),
        ("000 000 99 https://huggingface.co", False, False, "exit code 99"),
        ("nocurl", False, None, "no curl"),
        ("garbage", False, None, "printed 'garbage'"),
    ],
)
def test_the_probe_line_is_read(line: str, ca: bool, reachable: bool | None, said: str) -> None:
    found = hub.answer(line, ca_bundle=ca)
    assert found is not None
    assert found.reachable is reachable
    assert said in found.why


def test_no_line_means_not_asked() -> None:
    assert hub.answer(None, ca_bundle=False) is None


def _curl_stub(folder: Path, printed: str, rc: int) -> Path:
    """A curl that records its arguments and environment, prints `printed`, exits rc."""
    stub = folder / "curl"
    stub.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {folder}/args\n'
        f'echo "proxy=$https_proxy no=$no_proxy" > {folder}/env\n'
        f"printf '%s' '{printed}'\nexit {rc}\n"
    )
    stub.chmod(0o755)
    return stub


def _run(script: str, path: str) -> str:
    done = subprocess.run(
        ["/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"PATH": path},
    )
    return done.stdout


def test_the_script_asks_curl_bounded_through_the_proxy_without_its_credentials(
    tmp_path: Path,
) -> None:
    stack = _stack(AUTO, network={"proxy": "http://alice:s3cret@proxy.corp:3128"})
    script = hub.probe_script(stack)
    assert "s3cret" not in script
    assert "alice" not in script
    _curl_stub(tmp_path, "000 407", 56)
    out = _run(script, f"{tmp_path}:/usr/bin:/bin")
    assert out.strip() == "hub=000 407 56 https://huggingface.co"
    args = (tmp_path / "args").read_text().split()
    assert args[args.index("--max-time") + 1] == str(hub.TOTAL_S)
    assert args[args.index("--connect-timeout") + 1] == str(hub.CONNECT_S)
    assert args[-1] == "https://huggingface.co"
    env = (tmp_path / "env").read_text()
    assert "proxy=http://proxy.corp:3128 no=localhost,127.0.0.1" in env


def test_a_host_without_curl_says_so(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    out = _run(hub.probe_script(_stack(AUTO)), str(tmp_path / "bin"))
    assert out.strip() == "hub=nocurl"


def test_the_system_probe_carries_the_hub_lines_only_when_asked() -> None:
    lines = hub.probe_script(_stack(AUTO))
    assert "curl" not in HostProbe().command("/opt/v")
    with_hub = HostProbe().command("/opt/v", lines)
    assert lines in with_hub
    assert with_hub.rstrip().endswith("true")  # the probe's own ending stays last
    assert lines in shlex.split(ansible_bridge.probe_command("/opt/v", lines))[2]
    probe = HostProbe().process(["arch=x86_64", f"hub={UNREACHABLE}"])
    assert to_host_facts(probe).hub == UNREACHABLE
    assert to_host_facts(HostProbe().process(["arch=x86_64"])).hub is None


def test_only_auto_models_a_host_may_download_ask_for_the_hub() -> None:
    assert models.asks_hub(_stack(AUTO))
    assert not models.asks_hub(_stack([]))
    assert not models.asks_hub(_stack([{**AUTO[0], "source": "hub"}]))
    assert not models.asks_hub(_stack([{**AUTO[0], "source": "controller"}]))
    offline = _stack(AUTO, install={"offline": True, "wheelhouse": "/srv/w"})
    assert not models.asks_hub(offline)


def test_an_unreachable_hub_pushes_auto_models_and_says_so() -> None:
    stack = _stack([*AUTO, {"repo": "org/hub", "revision": REV, "source": "hub"}])
    cut_off = dataclasses.replace(FACTS, hub=UNREACHABLE)
    assert [m.repo for m in models.pushed(stack, cut_off)] == ["org/auto"]  # `hub` stays asked
    (note,) = models.notes(stack, cut_off)
    assert "does not reach the Hub (https://huggingface.co: its name does not resolve)" in note
    assert "org/auto pushed from the controller's HF cache" in note
    reachable = dataclasses.replace(FACTS, hub="200 000 0 https://huggingface.co")
    assert models.pushed(stack, reachable) == []
    assert models.notes(stack, reachable) == []
    unknown = dataclasses.replace(FACTS, hub="nocurl")
    assert models.pushed(stack, unknown) == []
    assert models.notes(stack, unknown) == [
        "could not test the way to the Hub (the host has no curl to test it): "
        "the host downloads org/auto"
    ]
    assert models.pushed(stack, FACTS) == []  # not asked: as before


@pytest.fixture
def controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Controller:
    """The controller, with `org/auto` in its HF cache, and a fake bloomkit wheel."""
    wheel = Wheel(tmp_path / "bloomkit-0.1.0-py3-none-any.whl", "ab" * 32)
    wheel.path.write_bytes(b"a wheel")
    monkeypatch.setattr(bloomkit_wheel, "build_kept", lambda: wheel)
    config = tmp_path / "config.json"
    config.write_text("{}\n")
    hub_cache = tmp_path / "hub"
    revision = lay_out(hub_cache, "org/auto", {"config.json": config})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    stack = _stack([{"repo": "org/auto", "revision": revision}])
    return Controller(REPO_ROOT / "stack.yml", stack, load_lock(REPO_ROOT / "lock"), wheel)


BOOKWORM = [
    "os_id=debian",
    "os_version=12",
    "arch=x86_64",
    "python3=3.11",
    "glibc=2.36",
    "disk_kb=46541704",
    "mem_kb=24684092",
    "sudo=1",
    "systemd=0",
]


def _models_step(plan: Any) -> Models:
    (step,) = [s for s in plan.steps() if s.id == "llm_env.models"]
    assert isinstance(step, Models)
    return step


def test_both_front_ends_decide_the_same_from_the_same_probe(controller: Controller) -> None:
    assert "curl" in controller.hub_probe({})
    assert controller.hub_probe({"gpurig_install_offline": True}) == ""
    for line, pushes in ((UNREACHABLE, True), ("200 000 0 https://huggingface.co", False)):
        output = [*BOOKWORM, f"hub={line}"]
        # pyinfra: the HostProbe fact, then the controller's plan.
        facts = to_host_facts(HostProbe().process(output))
        by_pyinfra = controller.host_plan({}, facts)
        # Ansible: the action plugin's parse of the one-round-trip probe, then the same plan.
        probed = ansible_bridge.parse_probe("\n".join(output) + "\n")
        by_ansible = controller.host_plan({}, probed.facts, probed.gpu, probed.sources)
        assert by_pyinfra.ok, by_pyinfra.verdict.problems
        steps = [_models_step(by_pyinfra), _models_step(by_ansible)]
        assert steps[0] == steps[1]
        assert bool(steps[0].uploads) is pushes
        assert by_pyinfra.verdict.notes == by_ansible.verdict.notes
        assert any("does not reach the Hub" in n for n in by_pyinfra.verdict.notes) is pushes
