"""Named failures of the containers stage (gpurig.plan.containers): its repository, its key,
and an engine whose daemon does not answer. The plan's scripts print one `gpurig:` line each,
which these signatures read; the rest of the table is gpurig.diagnose.signatures."""

from __future__ import annotations

import re

from gpurig.diagnose.names import Context
from gpurig.diagnose.signatures import Match, Signature

TOOLKIT_REPO_UNREACHABLE = "container toolkit repository unreachable"
TOOLKIT_KEY = "container toolkit key mismatch"
ENGINE_DOWN = "container engine not running"
IMAGE_MISSING = "CUDA image not on the host"
IMAGE_SMOKE_FAILED = "CUDA image smoke failed"
NAMES = (TOOLKIT_REPO_UNREACHABLE, TOOLKIT_KEY, ENGINE_DOWN, IMAGE_MISSING, IMAGE_SMOKE_FAILED)

IPTABLES_FIX = (
    "the daemon could not create its NAT chain: iptables is not permitted where it runs (an "
    "unprivileged container, a locked-down kernel). Run it on a VM or bare-metal host; an engine "
    'that only needs host networking can run with {"iptables": false, "bridge": "none"} in '
    "/etc/docker/daemon.json"
)
ENGINE_FIX = (
    "`journalctl -u docker` says why dockerd stopped; `systemctl restart docker` once fixed"
)


def _engine_message(match: Match, text: str, context: Context) -> str:
    died = re.search(r"failed to start daemon: (.+)$", text, re.M)
    said = f": {died[1].strip()[:320]}" if died else ""
    return f"dockerd does not answer ({match['state']}){said}"


def _engine_fix(match: Match, context: Context) -> str:
    return IPTABLES_FIX if "iptables" in match.string else ENGINE_FIX


SIGNATURES = (
    Signature(
        TOOLKIT_REPO_UNREACHABLE,
        re.compile(r"gpurig: container toolkit repository unreachable: (\S+): (.*)$", re.M),
        lambda m, text, c: f"the host cannot download {m[1]} ({m[2].strip()})",
        lambda m, c: (
            "let it reach nvidia.github.io (network.proxy and network.ca_bundle for a proxy), "
            "or turn containers.enabled off for hosts that cannot"
        ),
    ),
    Signature(
        TOOLKIT_KEY,
        re.compile(r"gpurig: container toolkit key (\S*), expected (\S+)"),
        lambda m, text, c: f"nvidia.github.io served key {m[1] or '(none)'}, not NVIDIA's {m[2]}",
        lambda m, c: (
            "check the download (a proxy or mirror may have replaced it); apt was not told to "
            "trust it"
        ),
    ),
    Signature(
        IMAGE_MISSING,
        re.compile(r"gpurig: image (\S+) is not on this host and cannot be pulled"),
        lambda m, text, c: f"the host has no {m[1]} and cannot pull it",
        lambda m, c: (
            "push it to a registry the hosts reach and name it in containers.image, or load "
            "`gpurig image build`'s image on the host (docker save | ssh HOST docker load)"
        ),
    ),
    Signature(
        IMAGE_SMOKE_FAILED,
        re.compile(r"gpurig: image smoke failed \(exit (\d+)\) in (\S+): see (\S+)"),
        lambda m, text, c: f"bloomkit smoke in {m[2]} with --gpus all exited {m[1]}",
        lambda m, c: (
            f"read {m[3]} on the host (its failures); the host's own smoke passed, so look at "
            "the container side: the nvidia runtime (docker info), the image's CUDA build"
        ),
    ),
    Signature(
        ENGINE_DOWN,
        re.compile(r"gpurig: docker engine not answering \(unit docker: (?P<state>[^)]*)\)"),
        _engine_message,
        _engine_fix,
    ),
)
