"""The system stage's plan: trust, proxy, apt packages, the environment file, the service user."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import PurePosixPath

from gpurig.errors import GpurigError, UsageError
from gpurig.hostlayout import APT_PROXY_FILE, CA_FILE, ENV_FILE, STATE_DIR, SYSTEM_CA_BUNDLE
from gpurig.plan import trust
from gpurig.plan.apt_background import start_script
from gpurig.plan.steps import UNCHANGED, AptPackages, Directories, File, ServiceUser, Step
from gpurig.spec import Stack

ENV_APT_LOCK_TIMEOUT = "GPURIG_APT_LOCK_TIMEOUT_S"


def _apt_lock_timeout_s() -> int:
    """The dpkg-lock bound: 120 s, or the controller's GPURIG_APT_LOCK_TIMEOUT_S (tests that
    hold the lock past the bound shorten it)."""
    text = os.environ.get(ENV_APT_LOCK_TIMEOUT, "").strip()
    if not text:
        return 120
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{ENV_APT_LOCK_TIMEOUT}={text!r}: give whole seconds, 1 or more")
    return int(text)


# unattended-upgrades on a fresh VM holds the dpkg lock for a while
APT_LOCK_TIMEOUT_S = _apt_lock_timeout_s()
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
    """apt.conf has no escapes: a value that could end its string or its line is refused here
    too, whatever the schema already refused."""
    if any(c in proxy for c in '"{};\\') or not proxy.isprintable():
        raise GpurigError("network.proxy holds a character apt.conf cannot quote")
    return (
        "// Written by gpurig (network.proxy in stack.yml).\n"
        f'Acquire::http::Proxy "{proxy}";\nAcquire::https::Proxy "{proxy}";\n'
    )


def apt_get(lock_timeout_s: int = APT_LOCK_TIMEOUT_S) -> str:
    """apt-get as every gpurig step runs it: quiet, no prompts, a bounded dpkg-lock wait."""
    return (
        "DEBIAN_FRONTEND=noninteractive apt-get -q "
        f"-o DPkg::Lock::Timeout={int(lock_timeout_s)} -o Dpkg::Use-Pty=0"
    )


APT_LISTS = "/var/lib/apt/lists"


def apt_update(lock_timeout_s: int = APT_LOCK_TIMEOUT_S, lists: str = APT_LISTS) -> str:
    """Refresh the lists: every gpurig step's `apt-get update`. Two costs a fresh host's first
    refresh pays for nothing (bookworm, 2 cores: 2.7 → 1.4 CPU-s):
    - gzip-compressed lists first, where the archive has them (Debian's do): a third more bytes
      than xz, a quarter of its decompression CPU; the signed Release file pins every form's
      hash alike, and a source without them falls back to apt's own order;
    - the translated descriptions (Translation-*: 32 MB for bookworm's main alone), fetched
      only where the host already has them, so that a host's lists are never cut back."""
    keep = f"ls {shlex.quote(lists)} 2>/dev/null | grep -q _Translation-"
    return (
        f"{apt_get(lock_timeout_s)} -o Acquire::CompressionTypes::Order::=gz "
        f"$({keep} || echo -o Acquire::Languages=none) update"
    )


def apt_install(packages: list[str], lock_timeout_s: int = APT_LOCK_TIMEOUT_S) -> str:
    """Refresh the lists, then install; `--` so that no name is read as an option."""
    apt = apt_get(lock_timeout_s)
    names = " ".join(shlex.quote(p) for p in packages)
    return f"{apt_update(lock_timeout_s)} && {apt} install -y --no-install-recommends -- {names}"


def installed(step_id: str, name: str, packages: list[str]) -> AptPackages:
    """An apt step of a later stage (containers, DCGM): the packages, installed in the
    foreground by apt_install (the system stage's background install has been waited for)."""
    return AptPackages(
        step_id,
        name,
        packages=packages,
        lock_timeout_s=APT_LOCK_TIMEOUT_S,
        script=apt_install(packages, APT_LOCK_TIMEOUT_S),
    )


def apt_script(packages: list[str], lock_timeout_s: int = APT_LOCK_TIMEOUT_S) -> str:
    """The apt step as one script (the Ansible role runs it): nothing when every package is
    installed; else the lists refreshed, then the install, as a background job that the wait
    step takes the result of (gpurig.plan.apt_background). A pinned version or an architecture
    is never counted as installed: apt judges it."""
    names = " ".join(shlex.quote(p) for p in packages)
    status = "-f='${db:Status-Abbrev}\\n'"
    installed = f"dpkg-query -W {status} -- {names} 2>/dev/null | grep -c '^ii'"
    return (
        f'if [ "$({installed})" -eq {len(packages)} ]; then echo "{UNCHANGED}"; exit 0; fi\n'
        f"{start_script(apt_install(packages, lock_timeout_s))}"
    )


def steps(stack: Stack, ca_sha256: str | None) -> list[Step]:
    """ca_sha256: of the controller's CA bundle (network.ca_bundle), read by the caller."""
    out: list[Step] = []
    if stack.network.ca_bundle:
        assert ca_sha256 is not None
        out.append(
            File.copy(
                "system.ca",
                "Trust the CA bundle",
                CA_FILE,
                src=stack.network.ca_bundle,
                sha256=ca_sha256,
                then=trust.update_script(CA_FILE),
            )
        )
    if stack.network.proxy:
        # It may hold the proxy's credentials, and only apt (as root) reads it; apt skips
        # configuration files it cannot read, so other users' apt commands still work.
        proxy = apt_proxy(stack.network.proxy)
        out.append(
            File.text(
                "system.apt_proxy", "Send apt through the proxy", APT_PROXY_FILE, proxy, mode="0600"
            )
        )
    else:
        out.append(File.absent("system.apt_proxy", "No apt proxy", APT_PROXY_FILE))
    packages = list(dict.fromkeys(["ca-certificates", *stack.apt_packages]))
    timeout = APT_LOCK_TIMEOUT_S
    out.append(
        AptPackages(
            "system.apt",
            "Install apt packages",
            packages=packages,
            lock_timeout_s=timeout,
            script=apt_script(packages, timeout),
            background=True,
        )
    )
    user = stack.host.user
    out.append(ServiceUser("system.user", "Create the service user", user=user, home=STATE_DIR))
    # It may hold the proxy's credentials: root and the service user's group read it, and the
    # login profile sources it only where it is readable.
    out.append(
        File.text(
            "system.environment",
            "Write the environment file",
            ENV_FILE,
            environment_file(stack),
            mode="0640",
            group=user,
        )
    )
    folders = [STATE_DIR, str(PurePosixPath(stack.host.report).parent), stack.host.hf_home]
    out.append(
        Directories(
            "system.folders",
            "Give the service user its state, report and cache folders",
            paths=list(dict.fromkeys(folders)),
            owner=user,
            group=user,
        )
    )
    return out
