"""The dpkg-lock bound: 120 s unless the controller's GPURIG_APT_LOCK_TIMEOUT_S says otherwise."""

from __future__ import annotations

import pytest

from gpurig import diagnose
from gpurig.errors import UsageError
from gpurig.plan import system


def test_the_bound_is_120_s_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(system.ENV_APT_LOCK_TIMEOUT, raising=False)
    assert system._apt_lock_timeout_s() == 120


def test_the_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(system.ENV_APT_LOCK_TIMEOUT, "15")
    assert system._apt_lock_timeout_s() == 15
    assert "DPkg::Lock::Timeout=15 " in system.apt_get(system._apt_lock_timeout_s())


@pytest.mark.parametrize("value", ["0", "-5", "2m", "1.5"])
def test_a_bound_that_is_not_whole_seconds_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(system.ENV_APT_LOCK_TIMEOUT, value)
    with pytest.raises(UsageError, match="GPURIG_APT_LOCK_TIMEOUT_S"):
        system._apt_lock_timeout_s()


# What apt-get (bookworm) prints when DPkg::Lock::Timeout runs out.
AFTER_THE_BOUND = (
    "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by "
    "process 443 (python3)...\n"
    "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by "
    "process 443 (python3)...\n"
    "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another "
    "process using it?\n"
)


def test_a_lock_held_past_the_bound_is_named() -> None:
    found = diagnose.explain(AFTER_THE_BOUND)
    assert [d.name for d in found] == [diagnose.DPKG_LOCKED]
    assert found[0].message == (
        "another package manager holds /var/lib/dpkg/lock-frontend (held by python3, pid 443)"
    )


def test_the_final_line_alone_still_names_the_lock() -> None:
    found = diagnose.explain(AFTER_THE_BOUND.splitlines()[-1])
    assert [d.name for d in found] == [diagnose.DPKG_LOCKED]
    assert found[0].message == "another package manager holds /var/lib/dpkg/lock-frontend"
