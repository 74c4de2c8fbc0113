"""Debian base images without a registry: debootstrap a root filesystem, `docker import` it.

Two kinds per suite, tagged gpurig/base:SUITE and gpurig/sandbox:SUITE-RECIPE, each cached by a
hash of its recipe (a changed recipe rebuilds, an unchanged one returns at once):
- base:    minbase + ca-certificates, apt sources with contrib/non-free enabled. Dockerfiles
           build FROM it.
- sandbox: base + what a fresh Debian cloud VM has (systemd, sshd, sudo, python3,
           unattended-upgrades...) and its `debian` sudo user. Sandbox hosts run it, booting
           systemd or (no-init hosts) only sshd; layering it on base keeps one debootstrap per suite
           and the same root filesystem under hosts and images.
Neither kind starts services on install (policy-rc.d), as in Debian's own container images:
hosts share the machine's network, so nothing may bind a port behind our back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from gpurig.errors import GpurigError, UsageError
from gpurig.sandbox.engine import docker_client
from gpurig.sandbox.paths import cache_home, engine_dir
from gpurig.sandbox.system import ensure_command, require_root, unmount_under

log = logging.getLogger(__name__)

SUITES = ("bookworm", "trixie")
KINDS = ("base", "sandbox")
RECIPE_LABEL = "gpurig.recipe"
# Bump when a build step below changes in a way its inputs do not show.
REVISION = 1
COMPONENTS = "main contrib non-free non-free-firmware"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BASE_PACKAGES = ("ca-certificates",)
# What a Debian cloud image has that minbase lacks, and a test host needs; kept lean.
SANDBOX_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "unattended-upgrades",
    "openssh-server",
    "sudo",
    "python3",
    "iproute2",
    "procps",
    "kmod",
    "netbase",
    "curl",
    "less",
)
SANDBOX_USER = "debian"
SANDBOX_UID = 1000
POLICY_RC_D = "#!/bin/sh\n# Containers start no services on install.\nexit 101\n"
SSHD_HARDENING = """\
# gpurig sandbox: key-only logins for the cloud user, as on a cloud image.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
"""
# Units a booted host must not run: all hosts share the machine's network namespace (so no
# network managers, resolvers or listeners of their own), and have no console to log in on.
MASKED_UNITS = (
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "systemd-firstboot.service",
    "getty.target",
    "tmp.mount",  # trixie's tmpfs /tmp needs a mount the container may not make
    "console-getty.service",
    "ssh.socket",
)
# apt-daily's timers fire at random times; a host runs them only when asked to (first-boot apt),
# so no test meets a dpkg lock it did not ask for.
DISABLED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer")
# Fresh host keys before sshd's first start, as cloud-init makes them; kept across reboots.
HOST_KEYS_UNIT = """\
[Unit]
Description=SSH host keys of this host (generated on its first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""
# Runs in a container from the base image, with the machine's network.
SANDBOX_SETUP = f"""\
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends {" ".join(SANDBOX_PACKAGES)}
useradd --uid {SANDBOX_UID} --user-group --create-home --shell /bin/bash \\
  --groups adm,sudo,video {SANDBOX_USER}
usermod -p '*' {SANDBOX_USER}  # no password, yet not locked: sshd accepts its key
echo '{SANDBOX_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
install -d -m 0700 -o {SANDBOX_USER} -g {SANDBOX_USER} /home/{SANDBOX_USER}/.ssh
cat > /etc/ssh/sshd_config.d/50-gpurig-sandbox.conf <<'EOF'
{SSHD_HARDENING}EOF
rm -f /etc/ssh/ssh_host_*  # each host generates its own at start
cat > /etc/systemd/system/gpurig-host-keys.service <<'EOF'
{HOST_KEYS_UNIT}EOF
systemctl enable gpurig-host-keys.service ssh.service
systemctl mask {" ".join(MASKED_UNITS)}
systemctl disable {" ".join(DISABLED_UNITS)}
apt-get clean
rm -rf /var/lib/apt/lists/*
"""


@dataclass(frozen=True)
class BaseImage:
    tag: str
    image_id: str
    recipe: str
    built_in_s: float | None  # None when it came from the cache


@dataclass(frozen=True)
class Recipe:
    suite: str
    kind: str
    mirror: str
    security_mirror: str

    @property
    def tag(self) -> str:
        return image_tag(self.suite, self.kind)

    def digest(self, parent: str = "") -> str:
        steps = {
            "revision": REVISION,
            "suite": self.suite,
            "kind": self.kind,
            "mirror": self.mirror,
            "security_mirror": self.security_mirror,
            "base_packages": BASE_PACKAGES,
            "sources": apt_sources(self.suite, self.mirror, self.security_mirror, "KEYRING"),
            "policy": POLICY_RC_D,
            "parent": parent,
        }
        if self.kind == "sandbox":
            steps["setup"] = SANDBOX_SETUP
        return hashlib.sha256(json.dumps(steps, sort_keys=True).encode()).hexdigest()[:16]


def image_tag(suite: str, kind: str) -> str:
    return f"gpurig/{kind}:{suite}"


def ensure_base_image(
    suite: str,
    kind: str = "base",
    *,
    client: docker.DockerClient | None = None,
    rebuild: bool = False,
) -> BaseImage:
    """The gpurig/KIND:SUITE image, built when missing or when its recipe changed."""
    if suite not in SUITES:
        raise UsageError(f"unknown Debian suite {suite!r}: use one of {', '.join(SUITES)}")
    if kind not in KINDS:
        raise UsageError(f"unknown base image kind {kind!r}: use one of {', '.join(KINDS)}")
    client = client or docker_client()
    recipe = Recipe(
        suite,
        kind,
        os.environ.get("GPURIG_DEBIAN_MIRROR") or DEFAULT_MIRROR,
        os.environ.get("GPURIG_DEBIAN_SECURITY_MIRROR") or DEFAULT_SECURITY_MIRROR,
    )
    parent = ensure_base_image(suite, "base", client=client) if kind == "sandbox" else None
    digest = recipe.digest(parent.recipe if parent else "")
    # Dockerfiles build FROM the base tag, so it stays fixed. Sandbox images carry their recipe
    # in the tag: branches with different recipes on one engine then do not rebuild each
    # other's image back and forth while their tests run.
    tag = recipe.tag if parent is None else f"{recipe.tag}-{digest[:8]}"
    with _build_lock(tag):  # a second builder waits, then finds the image cached
        old_id = _cached_id(client, tag)
        current = _image_recipe(client, tag)
        if current == digest and not rebuild and old_id:
            return BaseImage(tag, old_id, digest, None)
        log.warning("building %s (recipe %s); takes a minute or two", tag, digest)
        began = time.monotonic()
        labels = {RECIPE_LABEL: digest, "gpurig.kind": kind, "gpurig.suite": suite}
        if parent is None:
            _build_base(client, recipe, labels)
        else:
            _build_sandbox(client, tag, parent.tag, labels)
        built_in_s = time.monotonic() - began
        image = client.images.get(tag)
        if old_id and old_id != image.id:
            _remove_quietly(client, old_id)
        log.warning("built %s in %.0f s", tag, built_in_s)
        return BaseImage(tag, str(image.id), digest, built_in_s)


def remove_image(suite: str, kind: str, client: docker.DockerClient | None = None) -> bool:
    """Delete a cached image, every recipe of it (the bench's cold start); False when none."""
    client = client or docker_client()
    repository, _ = image_tag(suite, kind).split(":")
    tags = [
        tag
        for image in client.images.list(name=repository)
        for tag in image.tags
        if tag == image_tag(suite, kind) or tag.startswith(f"{image_tag(suite, kind)}-")
    ]
    for tag in tags:
        with contextlib.suppress(ImageNotFound):
            client.images.remove(tag, force=True)
    return bool(tags)


def apt_sources(suite: str, mirror: str, security_mirror: str, keyring: str) -> tuple[str, str]:
    """(path, text) of the apt sources: one-line format for bookworm, deb822 from trixie on."""
    if suite == "bookworm":
        text = (
            f"deb {mirror} {suite} {COMPONENTS}\n"
            f"deb {mirror} {suite}-updates {COMPONENTS}\n"
            f"deb {security_mirror} {suite}-security {COMPONENTS}\n"
        )
        return "etc/apt/sources.list", text
    text = (
        f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\n"
        f"Components: {COMPONENTS}\nSigned-By: {keyring}\n\n"
        f"Types: deb\nURIs: {security_mirror}\nSuites: {suite}-security\n"
        f"Components: {COMPONENTS}\nSigned-By: {keyring}\n"
    )
    return "etc/apt/sources.list.d/debian.sources", text


def _build_base(client: docker.DockerClient, recipe: Recipe, labels: dict[str, str]) -> None:
    require_root("debootstrap")
    debootstrap = ensure_command("debootstrap", "debootstrap")
    cache = cache_home() / "debootstrap" / recipe.suite
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"gpurig-rootfs-{recipe.suite}-"))
    try:
        rootfs = workdir / "rootfs"
        argv = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            f"--cache-dir={cache}",
            recipe.suite,
            str(rootfs),
            recipe.mirror,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-4:])
            raise GpurigError(f"debootstrap {recipe.suite} failed: {tail}")
        _configure_base(rootfs, recipe)
        _import(client, rootfs, recipe, labels)
    finally:
        _remove_tree(workdir)


def _configure_base(rootfs: Path, recipe: Recipe) -> None:
    keyrings = rootfs / "usr/share/keyrings"
    keyring = next(
        (
            f"/usr/share/keyrings/{name}"
            for name in ("debian-archive-keyring.pgp", "debian-archive-keyring.gpg")
            if (keyrings / name).exists()
        ),
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    )
    path, text = apt_sources(recipe.suite, recipe.mirror, recipe.security_mirror, keyring)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / path).parent.mkdir(parents=True, exist_ok=True)
    (rootfs / path).write_text(text)
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    # Docker mounts its own resolv.conf, hostname and hosts; keep the build machine's out.
    (rootfs / "etc/resolv.conf").write_text("")
    (rootfs / "etc/hostname").write_text("localhost\n")
    (rootfs / "etc/machine-id").write_text("")
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for leftover in rootfs.glob(pattern):
            if leftover.is_file():
                leftover.unlink()


def _import(
    client: docker.DockerClient, rootfs: Path, recipe: Recipe, labels: dict[str, str]
) -> None:
    repository, tag = recipe.tag.split(":")
    changes = ['CMD ["/bin/bash"]', *(f"LABEL {key}={value}" for key, value in labels.items())]
    # Stream the tar into the engine: no 200 MB file, no copy in memory.
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
    )
    try:
        client.api.import_image(
            src=tar.stdout, repository=repository, tag=tag, changes=changes, stream_src=True
        )
    finally:
        if tar.stdout:
            tar.stdout.close()
        status = tar.wait()
    if status != 0:
        raise GpurigError(f"tar of the {recipe.suite} root filesystem failed (status {status})")


def _build_sandbox(
    client: docker.DockerClient, image: str, base_tag: str, labels: dict[str, str]
) -> None:
    repository, tag = image.split(":")
    container = client.containers.run(
        base_tag,
        ["/bin/sh", "-ec", SANDBOX_SETUP],
        network_mode="host",  # the engine has no bridge: apt reaches the mirror this way
        detach=True,
        labels={"gpurig.build": image},
    )
    try:
        status = container.wait(timeout=900)["StatusCode"]
        if status != 0:
            tail = container.logs(tail=6).decode(errors="replace").strip().replace("\n", " | ")
            raise GpurigError(f"setting up {image} failed (status {status}): {tail}")
        container.commit(
            repository=repository, tag=tag, conf={"Labels": labels, "Cmd": ["/bin/bash"]}
        )
    finally:
        container.remove(force=True)


def _cached_id(client: docker.DockerClient, tag: str) -> str | None:
    try:
        return str(client.images.get(tag).id)
    except ImageNotFound:
        return None


def _image_recipe(client: docker.DockerClient, tag: str) -> str | None:
    try:
        labels = client.images.get(tag).labels or {}
    except ImageNotFound:
        return None
    return labels.get(RECIPE_LABEL)


def _remove_quietly(client: docker.DockerClient, image_id: str) -> None:
    try:
        client.images.remove(image_id)
    except docker.errors.APIError as error:  # still used by a container: leave it
        log.info("kept the previous image %s: %s", image_id[:19], error.explanation)


@contextmanager
def _build_lock(tag: str) -> Iterator[None]:
    locks = engine_dir() / "locks"  # images belong to an engine; so do their builds
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{tag.replace('/', '-').replace(':', '-')}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    """Remove a build dir, unmounting first whatever an interrupted debootstrap left mounted."""
    still = unmount_under(path)
    if still:
        log.warning("left %s in place: %s still mounted", path, ", ".join(still))
        return
    shutil.rmtree(path, ignore_errors=True)
