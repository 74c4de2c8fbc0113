"""The dpkg-lock bound: 120 s unless the controller's GPURIG_APT_LOCK_TIMEOUT_S says otherwise."""

from __future__ import annotations

import pytest

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
