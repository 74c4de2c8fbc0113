"""The containers stage's plan (stack.yml `containers:`): a container engine on every host, and
on GPU hosts NVIDIA's container toolkit as the engine's nvidia runtime; the CUDA image's smoke
test in the verify stage.

    every host      Debian's docker.io, its unit enabled and started, and the daemon answering
                    `docker version`; when it does not, why (from the unit's journal), named
    GPU hosts       NVIDIA's libnvidia-container apt repository, its signing key's fingerprint
                    checked before apt trusts it; nvidia-container-toolkit; `nvidia-ctk runtime
                    configure --runtime=docker` and a restart, only while the daemon lacks the
                    runtime; then, in verify, `bloomkit smoke` in the lock target's CUDA image
                    with `--gpus all`

The same steps as the rest of the plan (File, AptPackages, Service, Script): both front ends
render them as they render every other step.
"""

from __future__ import annotations

import shlex

from gpurig.hostlayout import (
    CONTAINER_TOOLKIT_KEYRING,
    CONTAINER_TOOLKIT_LIST,
    IMAGE_SMOKE_REPORT,
)
from gpurig.lock import Target
from gpurig.model.host import HostFacts
from gpurig.plan.driver import key_fingerprints, logged
from gpurig.plan.image import image_tag
from gpurig.plan.smoke import smoke_args
from gpurig.plan.steps import UNCHANGED, File, Script, Step
from gpurig.plan.system import apt_get, apt_update, installed
from gpurig.spec import Stack

ENGINE_PACKAGE = "docker.io"  # Debian's and Ubuntu's own engine: no outside repository
ENGINE_UNIT = "docker"
TOOLKIT_PACKAGE = "nvidia-container-toolkit"
TOOLKIT_REPO = "https://nvidia.github.io/libnvidia-container"
TOOLKIT_KEY_URL = f"{TOOLKIT_REPO}/gpgkey"
# NVIDIA CORPORATION (Open Source Projects) <cudatools@nvidia.com>: the key NVIDIA's container
# toolkit install guide has apt trust for this repository (signing key DDCAE044F796ECB0).
TOOLKIT_KEY_FINGERPRINT = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"
ENGINE_DOWN = "gpurig: docker engine not answering"
IMAGE_MOUNT = "/gpurig-out"


def toolkit_list() -> str:
    # apt puts the host's architecture in for $(ARCH), as NVIDIA's own list file does.
    return (
        "# Written by gpurig (stack.yml containers.enabled): NVIDIA's container toolkit.\n"
        f"deb [signed-by={CONTAINER_TOOLKIT_KEYRING}] {TOOLKIT_REPO}/stable/deb/$(ARCH) /\n"
    )


def _keyring_in_place() -> str:
    have = key_fingerprints(CONTAINER_TOOLKIT_KEYRING)  # find(1) takes the file itself
    return f'[ "$({have})" = {TOOLKIT_KEY_FINGERPRINT} ]'


def keyring_script() -> str:
    """NVIDIA's signing key, dearmored into its own keyring only when its one primary key is
    the fingerprint pinned here; curl's error is kept off a line of its own, so that it reads as
    this repository's failure rather than the CUDA repository's."""
    url = shlex.quote(TOOLKIT_KEY_URL)
    return f"""set -e
if {_keyring_in_place()}; then echo "{UNCHANGED}"; exit 0; fi
apt_get() {{ {apt_get()} "$@"; }}
command -v curl >/dev/null && command -v gpg >/dev/null || {{ {apt_update()}; apt_get install -y --no-install-recommends curl gpg ca-certificates; }}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT; mkdir "$tmp/k"
if ! curl -fsSL --retry 3 -o "$tmp/k/key.asc" {url} 2>"$tmp/err"; then echo "gpurig: container toolkit repository unreachable: {TOOLKIT_KEY_URL}: $(tr '\\n' ' ' <"$tmp/err")"; exit 1; fi
fprs=$({key_fingerprints('"$tmp/k"')})
if [ "$fprs" != {TOOLKIT_KEY_FINGERPRINT} ]; then echo "gpurig: container toolkit key $(echo $fprs | tr ' ' ,), expected {TOOLKIT_KEY_FINGERPRINT}"; exit 1; fi
gpg --dearmor <"$tmp/k/key.asc" >"$tmp/keyring.gpg"
install -D -m 0644 "$tmp/keyring.gpg" {CONTAINER_TOOLKIT_KEYRING}
"""  # noqa: E501


def _engine_running() -> str:
    return (
        f"systemctl is-enabled -q {ENGINE_UNIT} 2>/dev/null"
        " && docker version --format '{{.Server.Version}}' >/dev/null 2>&1"
    )


def _engine_down() -> str:
    """sh: why the daemon does not answer, from the unit's journal (the line dockerd dies
    with), for the named diagnosis; exits 1."""
    return (
        f'echo "{ENGINE_DOWN} (unit {ENGINE_UNIT}: $(systemctl is-active {ENGINE_UNIT} 2>&1))"\n'
        f"journalctl -u {ENGINE_UNIT} --no-pager -n 60 2>/dev/null"
        " | grep -E 'failed to start daemon|level=(error|fatal)' | tail -n 5\n"
        "exit 1\n"
    )


def engine_script() -> str:
    """The unit enabled and started, and the daemon answering `docker version`; a start that
    fails is named from the journal rather than as systemctl's "see journalctl"."""
    return (
        f'if {_engine_running()}; then echo "{UNCHANGED}"; exit 0; fi\n'
        f"systemctl enable -q {ENGINE_UNIT}; systemctl start {ENGINE_UNIT} 2>/dev/null\n"
        f"if {_engine_running()}; then echo 'gpurig: changed: docker engine running'; exit 0; fi\n"
        + _engine_down()
    )


def _runtime_configured() -> str:
    return "docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '\"nvidia\"'"


def runtime_script() -> str:
    """nvidia-ctk adds the nvidia runtime to /etc/docker/daemon.json (keeping what is there);
    the restart makes the daemon load it. Both only while the daemon lacks the runtime."""
    return (
        f'if {_runtime_configured()}; then echo "{UNCHANGED}"; exit 0; fi\n'
        f"nvidia-ctk runtime configure --runtime=docker\n"
        f"systemctl restart {ENGINE_UNIT} 2>/dev/null && {_runtime_configured()} && exit 0\n"
        + _engine_down()
    )


def image_smoke_script(
    image: str, args: list[str], timeout_s: int, report_path: str = IMAGE_SMOKE_REPORT
) -> str:
    """`bloomkit smoke` in the image with every GPU and no network, as `gpurig image smoke`
    runs it on the controller; the report is kept at `report_path`. The output folder belongs
    to the image's user, as images/smoke.py gives it."""
    ref = shlex.quote(image)
    smoke = shlex.join(["smoke", "--json", f"{IMAGE_MOUNT}/smoke.json", *args])
    report = shlex.quote(report_path)
    return f"""if ! docker image inspect {ref} >/dev/null 2>&1 && ! docker pull -q {ref} >/dev/null 2>&1; then
  echo "gpurig: image {image} is not on this host and cannot be pulled"; exit 1
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
owner=$(docker image inspect -f '{{{{.Config.User}}}}' {ref}); chown "${{owner:-0}}" "$out"
rm -f {report}
timeout -k 15 {int(timeout_s)} docker run --rm --gpus all --network none -v "$out:{IMAGE_MOUNT}" {ref} {smoke}; rc=$?
[ -f "$out/smoke.json" ] && install -m 0644 "$out/smoke.json" {report}
if [ "$rc" -eq 0 ]; then echo "{UNCHANGED}: the image's smoke test passed"; exit 0; fi
echo "gpurig: image smoke failed (exit $rc) in {image}: see {report_path}"; exit 1
"""  # noqa: E501


def steps(stack: Stack, facts: HostFacts) -> list[Step]:
    """The containers stage: empty unless `containers.enabled`."""
    if not stack.containers.enabled:
        return []
    out: list[Step] = [
        installed("containers.engine", "Install the container engine (docker.io)", [ENGINE_PACKAGE])
    ]
    if not facts.systemd:  # nothing to start the daemon: the note says so (notes())
        return out
    out.append(
        Script(
            "containers.engine_running",
            "Run the container engine",
            script=logged(engine_script(), "container-engine"),
            unless=_engine_running(),
        )
    )
    if facts.gpus:
        out += [
            Script(
                "containers.toolkit_key",
                f"Trust NVIDIA's container toolkit key ({TOOLKIT_KEY_FINGERPRINT[-8:]} checked)",
                script=logged(keyring_script(), "container-toolkit-key"),
                unless=_keyring_in_place(),
            ),
            File.text(
                "containers.toolkit_list",
                "Add NVIDIA's container toolkit repository",
                CONTAINER_TOOLKIT_LIST,
                toolkit_list(),
            ),
            installed(
                "containers.toolkit", "Install the NVIDIA container toolkit", [TOOLKIT_PACKAGE]
            ),
            Script(
                "containers.runtime",
                "Make nvidia a runtime of the container engine",
                script=logged(runtime_script(), "container-runtime"),
                unless=_runtime_configured(),
            ),
        ]
    return out


def notes(stack: Stack, facts: HostFacts) -> list[str]:
    if stack.containers.enabled and not facts.systemd:
        return ["no systemd: docker.io is installed, but nothing starts its daemon"]
    return []


def image_smoke(stack: Stack, facts: HostFacts, target: Target) -> list[Step]:
    """The verify stage's image smoke: GPU hosts with containers on and a CUDA target."""
    if not (stack.containers.enabled and facts.gpus and facts.systemd):
        return []
    if target.variant == "cpu":
        return []
    # stack.digest() is the lock's spec_sha256 here: preflight refuses a stale lock.
    image = stack.containers.image or image_tag(stack.digest(), target)
    return [
        Script(
            "verify.image_smoke",
            f"Run bloomkit smoke in {image} with all GPUs",
            script=logged(
                image_smoke_script(image, smoke_args(stack, True), stack.smoke.timeout_s),
                "image-smoke",
            ),
            timeout_s=stack.smoke.timeout_s + 120,
        )
    ]
