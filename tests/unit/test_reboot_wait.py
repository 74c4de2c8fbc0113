"""The driver stage's reboot wait: a new boot of the same host, or the host named, in bound."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from gpurig import diagnose
from gpurig.errors import UsageError
from gpurig.operations import control, reboot
from gpurig.plan import driver
from gpurig.preflight import Verdict


class FakeHost:
    """What the wait touches of a pyinfra Host: connect, disconnect, the boot marker fact."""

    name = "gpu-1"

    def __init__(self, boots: list[str | None]) -> None:
        self.boots = boots  # each connection: the boot marker, or None (refused); then down
        self.connector_data: dict[str, Any] = {}
        self.connected = False
        self.logged: list[str] = []

    def connect(self, show_errors: bool = True) -> None:
        self.connected = bool(self.boots) and self.boots[0] is not None
        if self.boots and self.boots[0] is None:
            self.boots.pop(0)  # one refused attempt; none left: down for good

    def disconnect(self) -> None:
        if self.connected and self.boots:
            self.boots.pop(0)
        self.connected = False

    def get_fact(self, fact: type) -> str:
        assert fact is reboot.BootMarker
        return str(self.boots[0])

    def log_styled(self, message: str, **kwargs: Any) -> None:
        self.logged.append(message)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reboot, "POLL_S", 0.0)
    monkeypatch.setattr(control, "FAILURES", {})


def test_the_wait_ends_at_a_new_boot_after_the_host_went_down() -> None:
    host = FakeHost(["boot-1 300", None, None, "boot-1 9000"])  # a VM stand-in: PID 1 restarted
    assert reboot._wait_for_new_boot(None, host, ["boot-1 300"], 5, None) is True  # type: ignore[arg-type]
    assert host.logged == []


def test_the_old_boot_still_answering_is_not_taken_for_the_new_one() -> None:
    host = FakeHost(["boot-1 300", "boot-2 310"])
    assert reboot._wait_for_new_boot(None, host, ["boot-1 300"], 5, None) is True  # type: ignore[arg-type]
    assert host.boots == ["boot-2 310"]


def test_a_host_that_does_not_come_back_is_named_within_the_bound() -> None:
    host = FakeHost([])
    verdict = Verdict()
    assert reboot._wait_for_new_boot(None, host, ["boot-1 300"], 1, verdict) is False  # type: ignore[arg-type]
    expected = (
        f"{diagnose.NO_REBOOT}: gpu-1 did not answer SSH from a new boot within 1 s of its reboot"
    )
    assert host.logged[0].startswith(expected)
    assert verdict.problems[0].startswith(expected)
    assert control.FAILURES["gpu-1"].startswith(expected)


def test_the_bound_is_the_plans_unless_the_controller_shortens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(driver.ENV_REBOOT_TIMEOUT, raising=False)
    assert driver.reboot_timeout_s() == driver.REBOOT_TIMEOUT_S
    monkeypatch.setenv(driver.ENV_REBOOT_TIMEOUT, "5")
    assert driver.reboot_timeout_s() == 5
    monkeypatch.setenv(driver.ENV_REBOOT_TIMEOUT, "0")
    with pytest.raises(UsageError, match="GPURIG_REBOOT_TIMEOUT_S='0'"):
        driver.reboot_timeout_s()


def test_the_boot_marker_reads_the_boot_id_and_pid_1s_start_here() -> None:
    """Both front ends compare it before and after a reboot: it must run under sh."""
    out = subprocess.run(
        ["/bin/sh", "-c", driver.BOOT_MARKER], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(out) == 2
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", out[0])
    assert out[1].isdigit()
