"""The driver plan per OS and Secure Boot state, and the scripts it ships (logged installs,
the CUDA keyring check), without pyinfra."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gpurig.errors import GpurigError
from gpurig.plan import driver as driver_plan
from helpers.driver_stage import DEBIAN_SOURCES, OS, UBUNTU_KERNEL, fresh, stack, verdict
from helpers.facts import host_facts

# Plans for each supported OS, Secure Boot on and off.


@pytest.mark.parametrize(
    ("os_name", "secure_boot", "branch", "source", "packages", "precompiled", "mok"),
    [
        ("ubuntu-24.04", False, 580, "ubuntu",
         ["nvidia-headless-580-server", "nvidia-utils-580-server"], False, False),
        ("ubuntu-22.04", False, 570, "ubuntu",
         ["nvidia-headless-570-server", "nvidia-utils-570-server"], False, False),
        ("ubuntu-24.04", True, 580, "ubuntu",
         ["nvidia-headless-no-dkms-580-server", "nvidia-utils-580-server",
          f"linux-modules-nvidia-580-server-{UBUNTU_KERNEL}",
          "linux-modules-nvidia-580-server-generic"], True, False),
        ("ubuntu-22.04", None, 580, "ubuntu",
         ["nvidia-headless-no-dkms-580-server", "nvidia-utils-580-server",
          f"linux-modules-nvidia-580-server-{UBUNTU_KERNEL}",
          "linux-modules-nvidia-580-server-generic"], True, False),
        ("debian-12", False, 535, "debian",
         ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"], False, False),
        ("debian-13", True, 550, "debian",
         ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"], False, True),
        ("debian-12", False, 580, "cuda", ["cuda-drivers-580"], False, False),
        ("debian-13", True, 580, "cuda", ["cuda-drivers-580"], False, True),
    ],
)  # fmt: skip
def test_plan_per_os_and_secure_boot(
    os_name: str,
    secure_boot: bool | None,
    branch: int,
    source: str,
    packages: list[str],
    precompiled: bool,
    mok: bool,
) -> None:
    os_id, os_version, _ = OS[os_name]
    state = fresh(os_id, secure_boot=secure_boot)
    plan = driver_plan.plan_driver(os_id, os_version, state, stack(branch).nvidia)
    assert (plan.source, plan.packages, plan.precompiled, plan.mok) == (
        source,
        packages,
        precompiled,
        mok,
    )
    assert plan.headers == ([] if precompiled else [f"linux-headers-{state.kernel}", *(
        ["linux-headers-generic"] if os_id == "ubuntu" else ["linux-headers-cloud-amd64"]
    )])  # fmt: skip
    assert plan.kernel_holds == sorted(fresh(os_id).packages.keys() - {"unattended-upgrades"})


def test_open_modules_change_the_package_names() -> None:
    open_stack = stack(open_kernel_modules=True).nvidia
    ubuntu = driver_plan.plan_driver("ubuntu", "24.04", fresh("ubuntu"), open_stack)
    assert ubuntu.packages == ["nvidia-headless-580-server-open", "nvidia-utils-580-server"]
    signed = driver_plan.plan_driver(
        "ubuntu", "24.04", fresh("ubuntu", secure_boot=True), open_stack
    )
    assert f"linux-modules-nvidia-580-server-open-{UBUNTU_KERNEL}" in signed.packages
    debian = driver_plan.plan_driver(
        "debian", "12", fresh(), stack(535, open_kernel_modules=True).nvidia
    )
    assert debian.packages[0] == "nvidia-open-kernel-dkms"
    cuda = driver_plan.plan_driver("debian", "12", fresh(), open_stack)
    assert cuda.packages == ["cuda-drivers-580", "nvidia-kernel-open-dkms"]


def test_unsupported_os_is_refused() -> None:
    with pytest.raises(GpurigError, match=r"Ubuntu 22\.04/24\.04 and Debian 12/13, not rocky-9"):
        driver_plan.plan_driver("rocky", "9", fresh(), stack().nvidia)
    # The section the deploy renders is refused the same way (plan.build makes it a problem).
    rocky = host_facts(os_id="rocky", os_version="9")
    with pytest.raises(GpurigError, match=r"Ubuntu 22\.04/24\.04 and Debian 12/13, not rocky-9"):
        driver_plan.driver_section(stack(), rocky, fresh(), verdict(), DEBIAN_SOURCES, {})


def test_logged_commands_keep_the_full_log_on_the_host() -> None:
    command = driver_plan.logged("apt-get install -y x", "nvidia-driver")
    assert command.startswith("mkdir -p /var/log/gpurig && ( apt-get install -y x ) >")
    assert "/var/log/gpurig/nvidia-driver.log 2>&1; rc=$?;" in command
    assert command.endswith("| tail -n 60; tail -n 5 /var/log/gpurig/nvidia-driver.log; exit $rc")


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
def test_the_keyring_check_sees_every_primary_key_in_every_key_file(
    tmp_path: Path, gnupg_env: dict[str, str]
) -> None:
    """The check the CUDA keyring script runs, on real keys: a subkey is its primary key's,
    a second key anywhere in the package (another file, another folder, armored) is seen."""
    env = gnupg_env

    def gpg(*args: str) -> str:
        done = subprocess.run(
            ["gpg", "--batch", "--passphrase", "", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def fingerprint(uid: str) -> str:
        out = gpg("--with-colons", "--list-keys", uid)
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))

    gpg("--quick-gen-key", "nvidia <n@example.com>", "ed25519", "default", "never")
    nvidia = fingerprint("n@example.com")
    gpg("--quick-add-key", nvidia, "cv25519", "encr", "never")  # a subkey of the same key
    package = tmp_path / "x"
    (package / "usr/share/keyrings").mkdir(parents=True)
    keyring = package / "usr/share/keyrings/cuda-archive-keyring.gpg"
    keyring.write_bytes(subprocess.run(
        ["gpg", "--export", nvidia], env=env, capture_output=True, check=True
    ).stdout)  # fmt: skip
    check = driver_plan.key_fingerprints(shlex.quote(str(package)))
    seen = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)
    assert seen.stdout.split() == [nvidia]  # one key: its subkey is not another signer

    gpg("--quick-gen-key", "other <o@example.com>", "ed25519", "default", "never")
    other = fingerprint("o@example.com")
    hidden = package / "etc/apt/trusted.gpg.d"
    hidden.mkdir(parents=True)
    (hidden / "extra.asc").write_text(gpg("--armor", "--export", other))
    seen = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)
    assert seen.stdout.split() == sorted([nvidia, other])  # the script then refuses
