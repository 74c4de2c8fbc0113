"""What a member of a cluster gets: /etc/gpurig/cluster.env, the launcher and the open-file
limit, and the route fact (which interface reaches the rendezvous host) they are built from."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from gpurig.cluster.model import NodeConfig
from gpurig.hostlayout import CLUSTER_ENV, CLUSTER_REPORTS_DIR, ENV_FILE, LAUNCHER, LIMITS_FILE


def env_values(config: NodeConfig) -> dict[str, str]:
    cluster = config.cluster
    return {
        "GPURIG_CLUSTER": cluster.name,
        "GPURIG_VENV": config.venv,
        "NNODES": str(len(cluster.members)),
        "NODE_RANK": str(config.node_rank),
        "NPROC_PER_NODE": str(config.nproc_per_node),
        "RDZV_ENDPOINT": cluster.endpoint,
        "RDZV_ID": cluster.name,
        "RDZV_TIMEOUT_S": str(cluster.rdzv_timeout_s),
        "DIST_TIMEOUT_S": str(cluster.dist_timeout_s),
        "NCCL_SOCKET_IFNAME": config.ifname,
        "GLOO_SOCKET_IFNAME": config.ifname,
        # A failed or timed-out NCCL collective tears the process down instead of hanging.
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }


def cluster_env(config: NodeConfig) -> str:
    cluster = config.cluster
    lines = [
        f"# Written by gpurig: node {config.node_rank} of {len(cluster.members)} in training "
        f"cluster {cluster.name} ({', '.join(cluster.names)}).",
        "# gpurig-launch reads it; KEY=value lines (sh, systemd EnvironmentFile).",
        *(f"{key}={shlex.quote(value)}" for key, value in env_values(config).items()),
    ]
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines as cluster_env writes them."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and key.strip():
            parsed = shlex.split(value) or [""]
            values[key.strip()] = parsed[0]
    return values


LAUNCHER_SCRIPT = f"""\
#!/bin/sh
# Written by gpurig: run a bloomkit command on this node of its training cluster, under
# torchrun. Start it on every member (`gpurig cluster run` does, in parallel):
#   gpurig-launch smoke --distributed --json {CLUSTER_REPORTS_DIR}/{{rank}}.json
#   gpurig-launch finetune --data train.jsonl --output out
# Static rendezvous at RDZV_ENDPOINT: node ranks come from {CLUSTER_ENV}; a node waits at most
# RDZV_TIMEOUT_S for all NNODES nodes, then fails (no restarts: a lost node fails the run).
set -eu
set -a
if [ -r {ENV_FILE} ]; then . {ENV_FILE}; fi
. {CLUSTER_ENV}
set +a
# NCCL and gloo open sockets per peer and channel: the soft open-file limit up to the hard one.
ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true
exec "$GPURIG_VENV/bin/torchrun" \\
  --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$NPROC_PER_NODE" \\
  --rdzv-backend static --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "$RDZV_ID" \\
  --rdzv-conf "timeout=$RDZV_TIMEOUT_S" --max-restarts 0 \\
  -m bloomkit "$@"
"""


def limits_file(config: NodeConfig) -> str:
    return (
        "# Written by gpurig: open files for training jobs of the service user (NCCL and gloo\n"
        "# open sockets per peer and channel; DataLoader workers pass tensors as descriptors).\n"
        "# pam_limits applies it to login sessions (ssh, runuser -l); a systemd unit needs\n"
        f"# LimitNOFILE={config.nofile} in its [Service] section instead.\n"
        f"{config.user} soft nofile {config.nofile}\n"
        f"{config.user} hard nofile {config.nofile}\n"
    )


def node_files(config: NodeConfig) -> dict[str, tuple[str, str]]:
    """Path -> (content, mode) of everything a member gets."""
    return {
        CLUSTER_ENV: (cluster_env(config), "644"),
        LAUNCHER: (LAUNCHER_SCRIPT, "755"),
        LIMITS_FILE: (limits_file(config), "644"),
    }


# --- the route to the rendezvous host (a fact on each member) ---------------------------------

# Prints `dev=IFNAME` for the interface that reaches ADDR: `ip route get`, or, on hosts without
# iproute2 (minimal images), the kernel's table read by python3. ADDR being this host's own
# address gives the interface that carries it (not `lo`, where the kernel routes it locally).
ROUTE_SCRIPT = r"""
addr=__ADDR__
case "$addr" in
  *[!0-9.]*) a=$(getent ahostsv4 "$addr" 2>/dev/null | awk 'NR==1 {print $1}')
             if [ -n "$a" ]; then addr=$a; fi;;
esac
dev=
if command -v ip >/dev/null 2>&1; then
  route=$(ip -o -4 route get "$addr" 2>/dev/null | head -n 1)
  case "$route" in
    local\ *) dev=$(ip -o -4 addr show to "$addr" 2>/dev/null | awk 'NR==1 {print $2}');;
  esac
  if [ -z "$dev" ]; then dev=$(printf '%s\n' "$route" | sed -n 's/.* dev \([^ ]*\).*/\1/p'); fi
elif command -v python3 >/dev/null 2>&1; then
  dev=$(python3 - "$addr" <<'PY' 2>/dev/null
import fcntl, socket, struct, sys
addr = sys.argv[1]
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _, name in socket.if_nameindex():
    try:
        raw = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
    except OSError:
        continue
    if socket.inet_ntoa(raw[20:24]) == addr:
        print(name)
        sys.exit()
if addr.startswith("127."):
    print("lo")
    sys.exit()
wanted = struct.unpack("<I", socket.inet_aton(addr))[0]
best = None
with open("/proc/net/route") as table:
    for line in table.readlines()[1:]:
        fields = line.split()
        dest, mask = int(fields[1], 16), int(fields[7], 16)
        if wanted & mask == dest and (best is None or bin(mask).count("1") > best[0]):
            best = (bin(mask).count("1"), fields[0])
if best:
    print(best[1])
PY
)
fi
echo "dev=$dev"
"""


def route_command(address: str) -> str:
    return ROUTE_SCRIPT.replace("__ADDR__", shlex.quote(address))


def parse_route(lines: Sequence[str]) -> str | None:
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key == "dev" and value:
            return value
    return None
