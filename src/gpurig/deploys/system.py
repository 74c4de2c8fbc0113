"""Stage 2, system: trust, proxy, apt packages, the service user and its folders."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from pyinfra.api.deploy import deploy
from pyinfra.operations import files as pyinfra_files

from gpurig.deploys import SPEC_DEFAULTS, host_stack
from gpurig.hostlayout import CA_FILE, ENV_FILE, STATE_DIR
from gpurig.operations import apt, files, users
from gpurig.spec import Stack

APT_PROXY_FILE = "/etc/apt/apt.conf.d/90gpurig-proxy"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's store, what every tool reads
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]*$")


def _value(text: str) -> str:
    """A value both sh and systemd's EnvironmentFile read back unchanged."""
    return text if SAFE_VALUE.match(text) else "'" + text.replace("'", "'\\''") + "'"


def environment(stack: Stack) -> dict[str, str]:
    """What LLM jobs on the host run with: /etc/gpurig/environment, and uv's installs."""
    env = {
        "HF_HOME": stack.host.hf_home,
        "SSL_CERT_FILE": SYSTEM_CA_BUNDLE,
        "REQUESTS_CA_BUNDLE": SYSTEM_CA_BUNDLE,
    }
    if stack.install.offline:
        env["HF_HUB_OFFLINE"] = "1"  # an air-gapped host must not wait on the Hub
    if stack.network.proxy:
        no_proxy = ",".join(stack.network.no_proxy)
        for name in ("http_proxy", "https_proxy"):
            env[name] = env[name.upper()] = stack.network.proxy
        env["no_proxy"] = env["NO_PROXY"] = no_proxy
    return env


def environment_file(stack: Stack) -> str:
    lines = ["# Written by gpurig: the environment of LLM jobs (KEY=value: sh, systemd)."]
    lines += [f"{key}={_value(value)}" for key, value in environment(stack).items()]
    return "\n".join(lines) + "\n"


def apt_proxy(proxy: str) -> str:
    quoted = proxy.replace('"', "")
    return (
        "// Written by gpurig (network.proxy in stack.yml).\n"
        f'Acquire::http::Proxy "{quoted}";\nAcquire::https::Proxy "{quoted}";\n'
    )


@deploy("System", data_defaults=SPEC_DEFAULTS)
def system() -> None:
    stack = host_stack()
    if stack.network.ca_bundle:
        files.installed(
            name="Trust the CA bundle",
            src=Path(stack.network.ca_bundle),
            dest=CA_FILE,
            # ca-certificates' own install runs the update too, if the package comes later.
            then="if command -v update-ca-certificates >/dev/null; then update-ca-certificates; fi",
        )
    if stack.network.proxy:
        files.installed(
            name="Send apt through the proxy",
            src=apt_proxy(stack.network.proxy).encode(),
            dest=APT_PROXY_FILE,
        )
    else:
        pyinfra_files.file(name="No apt proxy", path=APT_PROXY_FILE, present=False)
    apt.packages(
        name="Install apt packages",
        packages=list(dict.fromkeys(["ca-certificates", *stack.apt_packages])),
    )
    files.installed(
        name="Write the environment file",
        src=environment_file(stack).encode(),
        dest=ENV_FILE,
    )
    user = stack.host.user
    users.service_user(name="Create the service user", user=user, home=STATE_DIR)
    folders = dict.fromkeys(
        [STATE_DIR, str(PurePosixPath(stack.host.report).parent), stack.host.hf_home]
    )
    for folder in folders:
        pyinfra_files.directory(
            name=f"Give the service user {folder}",
            path=folder,
            user=user,
            group=user,
            mode="755",
        )
