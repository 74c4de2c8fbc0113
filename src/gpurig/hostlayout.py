"""Where things live on a provisioned host: one definition for every front end.

The plan (gpurig.plan) puts these paths into the steps both front ends render, and the parity
tests read them, so the end state of a host cannot differ by the tool that made it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the bottom of the graph: spec's defaults come from here
    from gpurig.lock import Target
    from gpurig.spec import Stack

UV_BIN = "/usr/local/bin/uv"
PROFILE_SCRIPT = "/etc/profile.d/gpurig.sh"
ENV_FILE = "/etc/gpurig/environment"  # KEY=value lines: systemd units, cron, launchers
CA_FILE = "/usr/local/share/ca-certificates/gpurig-ca.crt"
WHEEL_DIR = "/var/cache/gpurig/wheels"
STATE_DIR = "/var/lib/gpurig"
MARKER = "gpurig-venv.json"  # inside each venv: what it was built from
APT_PROXY_FILE = "/etc/apt/apt.conf.d/90gpurig-proxy"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's store, what every tool reads
PYTHON_DIR = "/opt/gpurig/python"  # uv-managed Pythons, when the distribution's does not fit
REQUIREMENTS_DIR = "/var/cache/gpurig/requirements"  # what each venv is built from
# Pushed model files land here (root's, outside the service user's cache) until checked.
MODELS_INCOMING = "/var/cache/gpurig/incoming"
# Large files' sha256 digests, remembered by root between runs (gpurig.plan.hashing).
DIGEST_MEMO = "/var/cache/gpurig/sha256-memo"
LOG_DIR = "/var/log/gpurig"  # full logs of the driver steps; their output names the failure
# The driver stage's files.
NOUVEAU_CONF = "/etc/modprobe.d/gpurig-blacklist-nouveau.conf"
UNATTENDED_CONF = "/etc/apt/apt.conf.d/51gpurig-nvidia"
PERSISTENCED_DROPIN = "/etc/systemd/system/nvidia-persistenced.service.d/gpurig.conf"
NONFREE_LIST = "/etc/apt/sources.list.d/gpurig-debian-nonfree.list"
DKMS_MOK = "/var/lib/dkms/mok.pub"  # DKMS's signing key: Secure Boot must have it enrolled
# Written by `gpurig sandbox up` on its systemd hosts, never by a deploy: this container is a
# VM stand-in, which its engine restarts (same disk, keys, port) when a reboot ends its PID 1.
# The GPU fact reads it so that the driver stage's reboot runs there as on a VM.
VM_STANDIN_MARKER = "/etc/gpurig-sandbox-vm"
# A training cluster's member (gpurig.cluster).
CLUSTER_ENV = "/etc/gpurig/cluster.env"
LAUNCHER = "/usr/local/bin/gpurig-launch"
LIMITS_FILE = "/etc/security/limits.d/90-gpurig-cluster.conf"
CLUSTER_REPORTS_DIR = f"{STATE_DIR}/cluster"  # per-rank smoke reports on each member
# GPU containers (stack.yml containers:): NVIDIA's container toolkit repository, and the
# CUDA image's smoke report.
CONTAINER_TOOLKIT_KEYRING = "/usr/share/keyrings/gpurig-nvidia-container-toolkit.gpg"
CONTAINER_TOOLKIT_LIST = "/etc/apt/sources.list.d/gpurig-nvidia-container-toolkit.list"
IMAGE_SMOKE_REPORT = f"{STATE_DIR}/image-smoke.json"
# stack.yml's host.* defaults.
DEFAULT_VENV = "/opt/gpurig/venv"
DEFAULT_HF_HOME = "/var/cache/gpurig/huggingface"
DEFAULT_REPORT = f"{STATE_DIR}/smoke.json"


@dataclass(frozen=True)
class Layout:
    """Paths for one stack on one host."""

    stack: Stack

    @property
    def venv_link(self) -> str:
        return self.stack.host.venv

    @property
    def venvs_dir(self) -> str:
        # Versioned venvs sit beside the live link, so swapping the link is one rename.
        return str(PurePosixPath(self.stack.host.venv).parent / "venvs")

    def venv_dir(self, target: Target, bloomkit_sha256: str) -> str:
        return f"{self.venvs_dir}/{venv_id(target, bloomkit_sha256)}"


def hub_dir(hf_home: str) -> str:
    """The Hub cache inside HF_HOME, as huggingface_hub lays it out (HF_HUB_CACHE's default)."""
    return f"{hf_home.rstrip('/')}/hub"


def model_dir(repo: str) -> str:
    """A model's folder in the Hub cache: org/name -> models--org--name."""
    return "models--" + repo.replace("/", "--")


def venv_id(target: Target, bloomkit_sha256: str) -> str:
    """Same lock and same bloomkit wheel -> same venv: nothing to do on a re-run."""
    digest = hashlib.sha256(f"{target.sha256}:{bloomkit_sha256}".encode()).hexdigest()
    return f"{target.name}-{digest[:12]}"
