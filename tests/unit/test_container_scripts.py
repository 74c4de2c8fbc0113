"""The containers stage's host-side scripts, run for real under sh with stand-ins for curl,
docker, nvidia-ctk and systemd on PATH: the key check refuses a key that is not NVIDIA's, and
every failure reads as its named diagnosis."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gpurig import diagnose
from gpurig.diagnose import containers as names
from gpurig.plan import containers

CURL_FAILS = "echo 'curl: (6) Could not resolve host: nvidia.github.io' >&2; exit 6\n"
# dockerd's last words in an unprivileged container (checked on a systemd sandbox host).
IPTABLES = (
    "failed to start daemon: Error initializing network controller: error obtaining controller "
    "instance: failed to create NAT chain DOCKER: iptables failed: iptables -t nat -N DOCKER: "
    "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied "
    "(you must be root)"
)


def stand_ins(folder: Path, **tools: str) -> dict[str, str]:
    """Executables named after `tools` with those shell bodies, first on PATH; each logs its
    arguments to calls.log."""
    folder.mkdir(exist_ok=True)
    for name, body in tools.items():
        path = folder / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >>{folder}/calls.log\n{body}')
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def calls(folder: Path) -> list[str]:
    log = folder / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def someone_elses_key(tmp_path: Path, gnupg_env: dict[str, str]) -> Path:
    """An armored public key that is not NVIDIA's (a fresh one, in a throwaway keyring)."""
    env = gnupg_env
    make = ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Mallory <m@example.org>"]
    subprocess.run([*make, "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    key = tmp_path / "mallory.asc"
    exported = subprocess.run(
        ["gpg", "--armor", "--export"], env=env, check=True, capture_output=True, text=True
    )
    key.write_text(exported.stdout)
    return key


def test_a_key_that_is_not_nvidias_is_refused(tmp_path: Path, someone_elses_key: Path) -> None:
    copy = f'while [ "$1" != -o ]; do shift; done; cp {someone_elses_key} "$2"\n'
    env = stand_ins(tmp_path / "bin", curl=copy)
    env["GNUPGHOME"] = str(tmp_path / "gnupg")
    done = run(containers.keyring_script(), env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gpurig: container toolkit key " in done.stdout
    assert f"expected {containers.TOOLKIT_KEY_FINGERPRINT}" in done.stdout
    (found,) = diagnose.explain(done.stdout)
    assert found.name == names.TOOLKIT_KEY
    assert not Path("/usr/share/keyrings/gpurig-nvidia-container-toolkit.gpg").exists()


def test_an_unreachable_repository_is_named_as_the_toolkits(tmp_path: Path) -> None:
    env = stand_ins(tmp_path / "bin", curl=CURL_FAILS)
    done = run(containers.keyring_script(), env)
    assert done.returncode == 1
    (found,) = diagnose.explain(done.stdout)
    assert found.name == names.TOOLKIT_REPO_UNREACHABLE  # not the CUDA repository's name
    assert "Could not resolve host: nvidia.github.io" in found.message


def test_an_engine_that_died_on_iptables_is_named_with_its_fix(tmp_path: Path) -> None:
    env = stand_ins(
        tmp_path / "bin",
        docker="echo 'Cannot connect to the Docker daemon' >&2; exit 1\n",
        systemctl="echo failed; exit 3\n",
        journalctl=f"echo 'dockerd[568]: {IPTABLES}'\n",
    )
    done = run(containers.engine_script(), env)
    assert done.returncode == 1
    assert "systemctl start docker" in calls(tmp_path / "bin")
    (found,) = diagnose.explain(done.stdout)
    assert found.name == names.ENGINE_DOWN
    assert found.message.startswith("dockerd does not answer (failed): Error initializing")
    assert "failed to create NAT chain DOCKER" in found.message
    assert '"iptables": false' in found.fix


def test_an_engine_that_answers_is_unchanged(tmp_path: Path) -> None:
    env = stand_ins(tmp_path / "bin", docker="echo 20.10.24\n", systemctl="exit 0\n")
    done = run(containers.engine_script(), env)
    assert (done.returncode, done.stdout.strip()) == (0, "gpurig: unchanged")
    assert not any(c.startswith("systemctl start") for c in calls(tmp_path / "bin"))


def test_the_runtime_is_configured_and_the_engine_restarted_only_once(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    runtimes = folder / "runtimes"
    env = stand_ins(
        folder,
        docker=f"cat {runtimes}\n",
        systemctl="exit 0\n",
        **{"nvidia-ctk": f'echo \'{{"nvidia":{{}},"runc":{{}}}}\' >{runtimes}\n'},
    )
    folder.mkdir(exist_ok=True)
    runtimes.write_text('{"io.containerd.runc.v2":{},"runc":{}}\n')
    first = run(containers.runtime_script(), env)
    assert first.returncode == 0, first.stderr
    assert "nvidia-ctk runtime configure --runtime=docker" in calls(folder)
    assert "systemctl restart docker" in calls(folder)
    (folder / "calls.log").unlink()
    again = run(containers.runtime_script(), env)
    assert again.stdout.strip() == "gpurig: unchanged"
    assert [c for c in calls(folder) if not c.startswith("docker ")] == []


# A stand-in docker for the image smoke: `image inspect` answers per $HAS_IMAGE, `pull` fails
# (no registry), `run` writes a report into the folder mounted at /gpurig-out and exits $RC.
DOCKER_FOR_SMOKE = """case "$1 $2" in
  "image inspect") [ -n "$HAS_IMAGE" ] || exit 1; echo 10001:10001; exit 0 ;;
  "pull "*) exit 1 ;;
esac
if [ "$1" = run ]; then
  while [ "$1" != -v ]; do shift; done; out=${2%%:*}
  echo '{"verdict": "pass"}' >"$out/smoke.json"; exit "${RC:-0}"
fi
"""


def test_the_image_smoke_runs_with_all_gpus_and_keeps_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    env = stand_ins(folder, docker=DOCKER_FOR_SMOKE, timeout='shift 3; exec "$@"\n', chown="")
    env["HAS_IMAGE"] = "1"
    report = tmp_path / "image-smoke.json"
    script = containers.image_smoke_script(
        "gpurig/bloomkit:cu130", ["--model", "tiny"], 60, str(report)
    )
    done = run(script, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image's smoke test passed" in done.stdout
    assert report.read_text().strip() == '{"verdict": "pass"}'
    (docker_run,) = [c for c in calls(folder) if c.startswith("docker run")]
    assert docker_run.startswith("docker run --rm --gpus all --network none -v ")
    assert docker_run.endswith(
        "gpurig/bloomkit:cu130 smoke --json /gpurig-out/smoke.json --model tiny"
    )
    assert any(c.startswith("chown 10001:10001 ") for c in calls(folder))  # the image's user

    env["RC"] = "1"
    failed = run(script, env)
    assert failed.returncode == 1
    (found,) = diagnose.explain(failed.stdout)
    assert found.name == names.IMAGE_SMOKE_FAILED
    assert str(report) in found.fix


def test_an_image_the_host_lacks_is_named(tmp_path: Path) -> None:
    env = stand_ins(tmp_path / "bin", docker=DOCKER_FOR_SMOKE)
    report = tmp_path / "image-smoke.json"
    done = run(containers.image_smoke_script("gpurig/bloomkit:cu130", [], 60, str(report)), env)
    assert done.returncode == 1
    (found,) = diagnose.explain(done.stdout)
    assert found.name == names.IMAGE_MISSING
    assert "containers.image" in found.fix
    assert not any(c.startswith("docker run") for c in calls(tmp_path / "bin"))
